"""Framing: find the face in the portrait and the driving video, cut the square the model
animates around it, and put the animated square back into the photo on the output canvas.

* :class:`FaceDetector` — faces in a picture (OpenCV's bundled detector, made scale-consistent);
* :func:`face_square`, :func:`cut_square`, :func:`square_picture` — the square around a face;
* :class:`FaceTrack`, :class:`DrivingFramer` — the face followed through a driving video;
* :class:`PasteBack`, :class:`CoverCanvas` — the animated square composed onto the canvas
  (``video.canvas``, parsed by :func:`pipeline.config.parse_canvas`).
"""

from ._detect import FaceBox, FaceDetector, no_face_message
from ._geometry import Square, cut_square, face_square, square_picture
from ._paste import CoverCanvas, PasteBack, feather_mask
from ._track import DrivingFramer, FaceTrack, sample_detections

__all__ = [
    "CoverCanvas",
    "DrivingFramer",
    "FaceBox",
    "FaceDetector",
    "FaceTrack",
    "PasteBack",
    "Square",
    "cut_square",
    "face_square",
    "no_face_message",
    "feather_mask",
    "sample_detections",
    "square_picture",
]
