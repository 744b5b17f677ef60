"""Structured config: the schema Hydra validates `conf/` against.

Every field has one default here; `conf/**/*.yaml` presets only override. A default of ``???``
(MISSING) is a required value: a preset or the command line gives it (`missing_problems`). Each field's comment is
its documentation (`docs/configuration.md` is generated from these docstrings and comments).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated, Literal, get_args, get_origin, get_type_hints

from omegaconf import MISSING, DictConfig, OmegaConf

# An option with a fixed set of values is a string annotated with the Literal of its values,
# ``Annotated[str, Literal[...]]``: each set is written once, here. OmegaConf 2.3 has no Literal
# fields, so it types such a field by its ``str`` (an Enum field would turn the value into an Enum
# member at every call site, and a wrong value into a Hydra traceback hint instead of one line and
# exit 2); `config_problems` checks the value against the Literal, and docs/configuration.md and
# ``--help`` list the values (`allowed_values`).
JobKind = Literal["render", "validate", "fetch_weights", "bench"]  # jobs.run_job dispatches on it


@dataclass
class HubRepo:
    """One Hugging Face repository that `job=fetch_weights` downloads."""

    repo_id: str = MISSING  # e.g. "huaichang/PersonaLive"
    revision: str = "main"  # a commit hash pins the exact files; a branch name follows it
    local_dir: str = MISSING  # folder under model.weights_dir the files land in
    allow_patterns: list[str] = field(default_factory=list)  # only files matching these globs
    subfolder_strip: str = ""  # leading folder of the repo's paths dropped when saving


@dataclass
class AnimatorConfig:
    """The streaming generation algorithm (PersonaLive's micro-chunk schedule)."""

    keyframe_threshold: float = (
        17.0  # L2 motion distance above which a frame becomes a history keyframe
    )
    max_keyframes: int = (
        3  # cap on history keyframes per stream (the reference's offline path has none: a bug)
    )
    keyframe_min_chunks: int = (
        9  # keyframes are considered from this chunk call on (the reference: count > 8)
    )
    translation_scale: float = (
        0.5  # how much of the driver's head translation is applied to the portrait
    )
    keep_warmup: bool = (
        False  # also emit the 12 reference-to-driver transition frames before frame 0
    )
    output_dtype: Annotated[str, Literal["uint8", "float"]] = (
        "uint8"  # "uint8" (0..255 RGB) or "float" ([0, 1] RGB, for checks)
    )


@dataclass
class ModelConfig:
    """Which PersonaLive networks to build, where their weights are and how they run."""

    name: str = "personalive"  # preset name, shown in logs and summaries
    architecture: Annotated[str, Literal["full", "tiny"]] = (
        "full"  # "full" (the published sizes, from the weights' config.json) or "tiny" (tests, demos)
    )
    weights_dir: str = "pretrained_weights"  # folder with the published layout (see docs/model.md)
    random_init: bool = False  # create random weights in weights_dir when missing (demo/tests only: output is noise)
    random_seed: int = 0  # seed for random_init weights
    dtype: Annotated[str, Literal["auto", "fp16", "bf16", "fp32"]] = (
        "auto"  # "auto" (fp16 on GPU, fp32 on CPU), "fp16", "bf16" or "fp32"
    )
    fp8: Annotated[str, Literal["none", "unet-linear", "unet"]] = (
        "none"  # "none" (every layer in dtype), "unet-linear": the denoising UNet's feed-forward products from 640 input channels as FP8 (e4m3) matrix products (weights per output channel, activations per token, written in e4m3 by the LayerNorm and GEGLU kernels before them; everything else stays in dtype), or "unet": those and the UNet's convolutions of 64k input channels (ResNet blocks, shortcuts, downsamplers: an implicit-GEMM Triton kernel, activations scaled per tensor); opt-in: it changes the frames slightly; measured on an H200, unet is slower than fp16 (its convolutions take twice cuDNN's time) and unet-linear, before its inputs came from the kernels, was not faster (docs/benchmarks.md, "FP8 matrix work"); GPUs of compute capability 8.9+ only (Ada, Hopper), an error elsewhere
    )
    device: str = "auto"  # "auto" (cuda when available), "cpu", "cuda" or "cuda:N"
    attention: Annotated[str, Literal["sdpa", "xformers", "eager"]] = (
        "sdpa"  # "sdpa" (PyTorch), "xformers" (GPU, when installed) or "eager"
    )
    resolution: int = (
        512  # output frames are resolution x resolution (the published model is trained at 512)
    )
    streams_per_worker: str = "auto"  # rows a worker streams at once in one batched denoising call: "auto" (GPU: as many as its free memory holds, at most 4, where throughput stops rising; CPU: 1) or a number
    compile: Annotated[str, Literal["none", "regional", "default", "max-autotune"]] = (
        "none"  # "none", "regional" (ResNet blocks, feed-forwards; ~1 min), "default"/"max-autotune" (whole UNet and VAE decoder)
    )
    cuda_graphs: bool = False  # replay the networks as captured CUDA graphs (the denoising UNet and the decoder, one per stream count and bank length; the driving frames' observation and the pose guider; a new row's portrait encoding and its signals' embeddings; GPU only): no launch gaps inside a call, and a new row's preparation no longer waits for room in the GPU's queue kernel by kernel
    graphs_at_start: bool = True  # with cuda_graphs: capture the graphs a worker's rows need first (the batched call for 1..S streams, their observation and decoder, a portrait, signal embeddings) on synthetic rows while the worker starts (a few seconds), not inside the job's first calls, where the GPU waits while the host records each one
    channels_last: bool = False  # NHWC layout for the convolution-heavy networks, with Triton kernels for their norms and bias adds on CUDA (the layout of the H100 figures in docs/benchmarks.md); model=personalive turns it on
    vae_decoder: Annotated[str, Literal["full", "tiny"]] = (
        "full"  # "full" (sd-vae-ft-mse) or "tiny" (TAESD in weights_dir/taesd: faster, lower quality)
    )
    cache_conditioning: bool = (
        True  # rows sharing a driving video reuse its pose/motion (<output_root>/_cache)
    )
    animator: AnimatorConfig = field(default_factory=AnimatorConfig)
    hub: list[HubRepo] = field(default_factory=list)  # what job=fetch_weights downloads


@dataclass
class VideoConfig:
    """How frames are read, encoded and muxed."""

    fit: Annotated[str, Literal["crop", "pad", "stretch"]] = (
        "crop"  # how a driving frame becomes square without its face (framing.driving=off, or no face near it): "crop" (centre), "pad" (black bars) or "stretch"; the portrait's is framing.portrait
    )
    codec: str = "libx264"  # H.264 encoder used by PyAV
    crf: int = 18  # x264 constant rate factor: lower is better quality and bigger files
    preset: str = "medium"  # x264 preset: ultrafast .. veryslow (speed vs size)
    pix_fmt: Annotated[str, Literal["yuv420p", "yuv444p", "yuv422p", "rgb24"]] = (
        "yuv420p"  # pixel format of the output (yuv420p plays everywhere); "rgb24" with codec libx264rgb and crf 0 is a lossless RGB master (video=lossless; large files, for editing)
    )
    encoder_threads: int = 4  # x264 threads per segment encoder; x264's output depends on it, so a fixed number gives the same bytes on every machine; 0: the encoder picks by the machine's cores (faster for one row on a big machine, bytes then depend on the machine)
    segment_seconds: float = (
        10.0  # output is written in segments of about this length (resume points)
    )
    first_segment_seconds: float | None = (
        1.0  # a row's first segment is this short, so its first frames (and first resume point) are committed early; null: segment_seconds
    )
    canvas: str = "crop"  # output picture: "crop" (the animated square, model.resolution), "portrait" (pasted back into the whole photo at its resolution) or "<W>x<H>", e.g. 1080x1920 (the photo with the face pasted back, scaled to cover the canvas, the cut centred on the face); rows framed without a face get the animated square scaled to the canvas
    audio: Annotated[str, Literal["auto", "none"]] = (
        "auto"  # "auto" (row's audio file, else the driving video's track), "none"
    )
    audio_length: Annotated[str, Literal["video", "shortest"]] = (
        "video"  # "video": audio trimmed or padded with silence to the video; "shortest": both cut
    )
    audio_codec: str = "aac"  # codec of the muxed audio track
    audio_bitrate: str = "192k"  # bitrate of the muxed audio track
    ffmpeg: str | None = None  # ffmpeg binary; None: the one on PATH, else imageio-ffmpeg's


@dataclass
class FramingConfig:
    """How the square the model animates is found in the portrait and the driving video."""

    portrait: Annotated[str, Literal["face", "crop", "pad", "stretch"]] = (
        "face"  # "face": the square around the portrait's face (a row without a detectable face fails with a verdict); "crop" (centre), "pad" (black bars) or "stretch": the whole photo made square, no face needed
    )
    driving: Annotated[str, Literal["face", "off"]] = (
        "face"  # "face": each driving frame cut around the driver's tracked face at the portrait's scale (a presenter far from the camera drives like a close-up); "off": the whole frame made square by video.fit (the reference's online path)
    )
    face_index: int = (
        0  # which face to animate when a photo has several: 0 the largest, 1 the next, ...
    )
    scale: float = 2.5  # side of the square / width of the face box (2.5: head and shoulders, as PersonaLive's inputs are framed)
    center_y: float = 0.45  # height of the face's centre in the square (0 top, 1 bottom)
    detect_every: int = 4  # driving frames per face detection (the track is smoothed between)
    smoothing: float = 1.0  # width of the track's smoothing, in detections (Gaussian sigma; a centred line fit over 3 sigma each side: no lag, no jitter)
    feather: float = 0.12  # paste-back: width of the mask's soft edge, as a fraction of the square


@dataclass
class S3Config:
    """S3 or S3-compatible object store settings (credentials come from the standard AWS chain)."""

    endpoint_url: str | None = None  # e.g. http://127.0.0.1:9000 for MinIO; None: AWS
    region: str | None = None  # AWS region; None: from the environment/profile
    profile: str | None = None  # AWS profile name; None: default chain
    request_checksum_calculation: str = (
        "when_required"  # boto3>=1.36 default "when_supported" breaks some stores
    )
    response_checksum_validation: str = "when_required"  # likewise for responses
    multipart_threshold_mb: int = 64  # uploads bigger than this go multipart
    multipart_chunksize_mb: int = 16  # part size of multipart uploads
    max_attempts: int = 5  # attempts per request on transient errors (exponential backoff)
    retry_mode: str = (
        "standard"  # botocore retry mode: "standard" or "adaptive" (client-side rate limiting)
    )
    checksum: str = "sha256"  # upload verification: "sha256" (flexible checksums) or "md5" (stores without them)
    read_block_mb: int = 8  # size of the ranged GETs that stream S3 inputs (driving videos)
    connect_timeout_s: float = 10.0  # connection timeout per request
    read_timeout_s: float = 60.0  # read timeout per request


@dataclass
class AzureConfig:
    """Azure Blob Storage settings for az://container/blob URIs (credentials come from the environment)."""

    account_url: str | None = (
        None  # e.g. http://127.0.0.1:10000/devstoreaccount1 for Azurite; None: https://<AZURE_STORAGE_ACCOUNT>.blob.core.windows.net (AZURE_STORAGE_CONNECTION_STRING, when set, names the endpoint itself)
    )
    max_attempts: int = (
        5  # attempts per request on transient errors (the SDK's exponential backoff)
    )
    connect_timeout_s: float = 10.0  # connection timeout per request
    read_timeout_s: float = 60.0  # read timeout per request


@dataclass
class StorageConfig:
    """Where results go and which inputs may be read."""

    output_root: str = MISSING  # local folder or s3://bucket/prefix; results go to <output_root>/<job name>/; the storage preset gives it (storage=local: outputs), storage=s3 leaves it to the command line
    allowed_input_roots: list[str] = field(
        default_factory=list
    )  # if set, local inputs must lie under one of these
    s3: S3Config = field(default_factory=S3Config)
    azure: AzureConfig = field(default_factory=AzureConfig)  # az:// URIs (pip install '.[azure]')


@dataclass
class ClusterConfig:
    """Ray: where workers run and how many."""

    address: str | None = (
        None  # None: embedded local Ray; "auto" or "ray://host:port": join a cluster
    )
    num_workers: int | None = (
        None  # None: one per GPU of each node (cpu_workers per node when the cluster has no GPU), more as nodes join; a number: at most this many in all
    )
    cpu_workers: int = 2  # workers per node when the cluster has no GPU (at most as many as the node's CPUs hold, by cpus_per_worker)
    cpus_per_worker: float = (
        1.0  # CPUs reserved by each worker actor (torch threads follow it on CPU)
    )
    gpus_per_worker: float = 1.0  # GPUs per worker actor when GPUs exist
    num_cpus: int | None = None  # embedded Ray only: CPUs it may use (None: all)
    max_restarts: int = 2  # a worker process that dies is restarted this many times
    row_retries: int = (
        2  # a row whose worker died, or that hit a transient error, is retried this often
    )
    poison_after: int = 2  # a row that killed its worker this many times is quarantined
    rows_ahead: int | None = (
        None  # rows each worker prepares beyond its stream slots (probe, portrait, first chunks), so a slot freed by a finished row is taken at the next batched call; null: as many as it has slots (rows that end together are all replaced at once)
    )
    rows_finishing: int | None = (
        None  # rows each worker may hold past their stream slot (last segment, join, mux, commit, signals) on top of its slots and cluster.rows_ahead: a row that gave its slot back stops counting against them, so slowly finishing short rows do not keep the next rows from being prepared; null: as many as cluster.rows_ahead (so rows_ahead=0 still renders one row after the other)
    )
    log_to_driver: bool = False  # stream worker logs to the driver's terminal
    split_frames: int = 9000  # a row longer than this many frames is cut into parts of this length (as many as that takes, of equal length; cluster.split_start_cost makes the earlier ones longer) that render on different workers at once and are joined without re-encoding (docs/cluster.md); 0: never split
    order: Annotated[str, Literal["longest_first", "manifest"]] = (
        "longest_first"  # the order rows (and the parts of split rows) go out to workers: "longest_first" (by frames: the job does not end with one long row rendering alone) or "manifest" (the CSV's order)
    )
    split_to_fill: bool = True  # also cut a row longer than the job's share of a stream slot (the frames to render over all workers' stream slots) into parts of about that share (at least 320 frames each, at most one per slot), so the job does not end with one long row rendering alone while the other slots sit empty; a row an earlier run began keeps the cut it had (its committed segments or parts are resumed); the seams are within 1/255 (docs/cluster.md)
    split_overlap: int = 16  # driving frames each part after the first renders before its first frame and discards, so its window and keyframes are as the whole row's (a multiple of 4; docs/cluster.md has the seam figures per overlap)
    split_start_cost: float = 0.0  # how long a part's start takes per driving frame before it, as a share of one rendered frame's time (it reads the video from the beginning to re-decide the keyframes; docs/cluster.md): parts are cut so they all end together, the earlier ones longer; 0: parts of equal length; at most 0.5
    rescan_seconds: float = 5.0  # while a job runs, look at the cluster's nodes this often: start workers on nodes that joined (while rows wait for one), notice nodes that left; 0: keep the workers the job started with
    trace_dir: str | None = (
        None  # a folder on each worker's node: every worker this job starts writes a Chrome trace of trace_calls of its batched calls there (<worker name>.json.gz; every thread's operators and the GPU's kernels, torch.profiler; read it with scripts/trace_summary.py) to see where a real render's GPU waits; the traced calls run slower; workers taken over warm are not traced; None: no trace
    )
    trace_calls: list[int] = field(
        default_factory=lambda: [60, 4]
    )  # [first call, number of calls] that cluster.trace_dir traces (calls counted from 0 in each worker)
    keep_workers: bool = False  # on a Ray cluster the job joined (cluster.address): leave the workers running after the job, model loaded, so the next job with the same model and worker settings takes them over and starts rendering in seconds (docs/cluster.md, "Warm workers"); a job with false takes warm workers it finds too and stops them at its end; with embedded Ray the workers always stop with the job


@dataclass
class BenchConfig:
    """job=bench: what the throughput benchmark renders and records (docs/benchmarks.md)."""

    frames: int = 200  # driving frames per stream
    warmup_calls: int = 4  # batched calls not timed (allocator warm-up, compilation)
    streams: int | None = None  # streams rendered at once; null: model.streams_per_worker
    rate: int = 25  # frame rate of the synthetic driving videos
    flops: bool = True  # count FLOPs per frame with torch.utils.flop_counter (one extra eager call)
    output: str | None = None  # append the result as JSON to this file
    label: str | None = None  # name of this run in the results; null: "<model.name> S=<streams>"
    profile: bool = False  # also print the top operators of two steady-state calls (torch.profiler)
    trace: str | None = (
        None  # write a Chrome trace (torch.profiler, .json.gz) of two steady-state calls of the render to this file
    )
    sync_check: bool = False  # GPU: log where the host waited for the GPU in steady state (torch.cuda sync debug mode)
    manifest: str | None = (
        None  # render the first rows of this manifest (their portraits and clips, up to `frames` each) instead of synthetic inputs: the content a render job of it meets
    )


@dataclass
class JobConfig:
    """What to run."""

    kind: Annotated[str, JobKind] = (
        "render"  # the job to run (job=<kind> picks its preset in conf/job/)
    )
    name: str | None = (
        None  # output folder name under storage.output_root; None: the manifest's file stem
    )
    max_frames: int | None = None  # cap on frames per row (a row's own max_frames wins)
    seed: int = 42  # default seed for rows without one
    strict_manifest: bool = False  # reject manifest columns the pipeline does not read (default: keep them as extra columns, carried to summary.json and the report)
    progress: Annotated[str, Literal["auto", "rich", "plain", "none"]] = (
        "auto"  # "auto" (rich bars on a terminal, log lines otherwise), "rich", "plain", "none"
    )
    signals_every_seconds: float = 1.0  # job=render: per row, one identity/motion sample per this many seconds of output (CLIP similarity of the output to the portrait with the model's own image encoder, frame-to-frame change of output and driving frames; summary.json rows' "signals", docs/signals.md); 0: off
    verbose: bool = False  # also print the whole composed config at the start (it is always saved as <job folder>/config.yaml)
    estimate_fps: float = 30.0  # job=validate: output frames/s per GPU assumed for the work estimate (a real render on an H100, docs/benchmarks.md)
    bench: BenchConfig = field(default_factory=BenchConfig)


@dataclass
class RenderConfig:
    """The root of the config tree."""

    job: JobConfig = field(default_factory=JobConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    framing: FramingConfig = field(default_factory=FramingConfig)
    manifest: str | None = (
        None  # path or s3:// URI of the CSV manifest (job=render and job=validate)
    )


def allowed_values(cls: type) -> dict[str, tuple[str, ...]]:
    """{field name: its allowed values} of a config dataclass's ``Annotated[str, Literal[...]]``
    fields (fields without a fixed set are left out)."""
    found = {}
    for name, hint in get_type_hints(cls, include_extras=True).items():
        if get_origin(hint) is Annotated:
            for extra in hint.__metadata__:
                if get_origin(extra) is Literal:
                    found[name] = get_args(extra)
    return found


def _choice_problems(node: object, path: str = "") -> Iterator[str]:
    """A line for each fixed-set option of `node`'s tree whose value is not one of its set."""
    choices = allowed_values(type(node))
    for item in dataclasses.fields(node):  # type: ignore[arg-type]
        value = getattr(node, item.name)
        key = f"{path}.{item.name}" if path else item.name
        if dataclasses.is_dataclass(value):
            yield from _choice_problems(value, key)
        elif isinstance(value, list):
            for entry in value:
                if dataclasses.is_dataclass(entry):
                    yield from _choice_problems(entry, f"{key}[]")
        elif item.name in choices and value not in choices[item.name]:
            yield f"{key}={value!r} is not one of: {', '.join(choices[item.name])}"


def parse_canvas(value: str) -> tuple[int, int] | str:
    """``"crop"`` / ``"portrait"``, or ``(width, height)`` from ``"WxH"``; ValueError otherwise."""
    if value in ("crop", "portrait"):
        return value
    parts = value.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f"video.canvas={value!r}: use crop, portrait or <width>x<height>")
    width, height = int(parts[0]), int(parts[1])
    if width < 16 or height < 16 or width % 2 or height % 2:
        raise ValueError(
            f"video.canvas={value!r}: width and height must be even numbers of at least 16 "
            "(H.264 in 4:2:0 halves them)"
        )
    return width, height


def _streams_problems(cfg: RenderConfig) -> list[str]:
    """model.streams_per_worker: auto or a positive whole number."""
    streams = cfg.model.streams_per_worker
    if streams != "auto" and not (str(streams).isdigit() and int(streams) > 0):
        return [f"model.streams_per_worker={streams!r} must be auto or a positive whole number"]
    return []


def _split_problems(cfg: RenderConfig) -> list[str]:
    """How long rows are cut into parts: cluster.split_frames, split_overlap, split_start_cost."""
    cluster = cfg.cluster
    problems = []
    if cluster.split_frames and cluster.split_frames < 64:
        problems.append(
            f"cluster.split_frames={cluster.split_frames} must be 0 (never split) or at least 64"
        )
    if cluster.split_overlap < 0 or cluster.split_overlap % 4:
        problems.append(
            f"cluster.split_overlap={cluster.split_overlap} must be a multiple of 4, 0 or more"
        )
    if not 0 <= cluster.split_start_cost <= 0.5:
        problems.append(
            f"cluster.split_start_cost={cluster.split_start_cost} must be between 0 "
            "(parts of equal length) and 0.5"
        )
    return problems


def _pool_problems(cfg: RenderConfig) -> list[str]:
    """The worker pool: cluster.rows_ahead, rows_finishing, num_workers, rescan_seconds,
    trace_calls."""
    cluster = cfg.cluster
    problems = []
    trace = list(cluster.trace_calls)
    if len(trace) != 2 or trace[0] < 0 or trace[1] < 1:
        problems.append(
            f"cluster.trace_calls={trace} must be [first call (0 or more), calls (1 or more)]"
        )
    for name in ("rows_ahead", "rows_finishing"):
        value = getattr(cluster, name)
        if value is not None and value < 0:
            problems.append(f"cluster.{name}={value} must be 0 or more (or null)")
    if cluster.num_workers is not None and cluster.num_workers < 1:
        problems.append(
            f"cluster.num_workers={cluster.num_workers} must be at least 1 (or null for automatic)"
        )
    if cluster.rescan_seconds < 0:
        problems.append(
            f"cluster.rescan_seconds={cluster.rescan_seconds} must be 0 (a fixed pool) or more"
        )
    return problems


def _positive_problems(cfg: RenderConfig) -> list[str]:
    """Sizes and durations of several sections that must be above 0."""
    positive = {
        "model.resolution": cfg.model.resolution,
        "video.segment_seconds": cfg.video.segment_seconds,
        "video.first_segment_seconds": 1.0
        if cfg.video.first_segment_seconds is None
        else cfg.video.first_segment_seconds,
        "cluster.cpu_workers": cfg.cluster.cpu_workers,
        "cluster.cpus_per_worker": cfg.cluster.cpus_per_worker,
    }
    return [f"{path}={value!r} must be positive" for path, value in positive.items() if value <= 0]


def _encoder_problems(cfg: RenderConfig) -> list[str]:
    """The encoder's numbers: video.encoder_threads and video.crf."""
    problems = []
    if cfg.video.encoder_threads < 0:
        problems.append(
            f"video.encoder_threads={cfg.video.encoder_threads} must be 0 (the encoder picks) or more"
        )
    if not 0 <= cfg.video.crf <= 51:
        problems.append(
            f"video.crf={cfg.video.crf} must be between 0 and 51 (lower is better quality)"
        )
    return problems


def _device_problems(cfg: RenderConfig) -> list[str]:
    """model.device: auto, cpu, cuda or cuda:N."""
    if cfg.model.device != "auto" and not cfg.model.device.startswith(("cpu", "cuda")):
        return [f"model.device={cfg.model.device!r} is not one of: auto, cpu, cuda, cuda:N"]
    return []


def _animator_problems(cfg: RenderConfig) -> list[str]:
    """Animator options that only make sense outside job=render."""
    animator = cfg.model.animator
    if cfg.job.kind == "render" and (animator.keep_warmup or animator.output_dtype != "uint8"):
        return [
            "model.animator.keep_warmup=true / output_dtype=float are for using the animator directly; "
            "job=render writes exactly one uint8 frame per driving frame"
        ]
    return []


def _picture_problems(cfg: RenderConfig) -> list[str]:
    """The output picture: video.pix_fmt against video.codec, and video.canvas."""
    problems = []
    if (cfg.video.pix_fmt == "rgb24") != (cfg.video.codec == "libx264rgb"):
        problems.append(
            f"video.pix_fmt={cfg.video.pix_fmt} with video.codec={cfg.video.codec}: RGB output "
            "(rgb24) is written by libx264rgb, which writes nothing else; use video=lossless"
        )
    try:
        parse_canvas(cfg.video.canvas)
    except ValueError as err:
        problems.append(str(err))
    return problems


def _framing_problems(cfg: RenderConfig) -> list[str]:
    """The framing section's counts and proportions."""
    framing = cfg.framing
    problems = []
    if framing.face_index < 0 or framing.detect_every < 1 or framing.smoothing < 0:
        problems.append(
            "framing.face_index must be 0 or more, framing.detect_every 1 or more and "
            "framing.smoothing 0 or more"
        )
    if framing.scale <= 0 or not 0 <= framing.center_y <= 1 or not 0 < framing.feather <= 0.5:
        problems.append(
            "framing.scale must be positive, framing.center_y between 0 and 1, "
            "framing.feather above 0 and at most 0.5"
        )
    return problems


def _job_problems(cfg: RenderConfig) -> list[str]:
    """job.signals_every_seconds and job.max_frames."""
    problems = []
    if cfg.job.signals_every_seconds < 0:
        problems.append(
            f"job.signals_every_seconds={cfg.job.signals_every_seconds} must be 0 (off) or more"
        )
    if cfg.job.max_frames is not None and cfg.job.max_frames < 1:
        problems.append(
            f"job.max_frames={cfg.job.max_frames} must be at least 1 (or null for whole videos)"
        )
    return problems


def config_problems(cfg: RenderConfig) -> list[str]:
    """Settings that cannot work, each as one line naming the option, its value and the choices."""
    return [
        *_choice_problems(cfg),
        *_streams_problems(cfg),
        *_split_problems(cfg),
        *_pool_problems(cfg),
        *_positive_problems(cfg),
        *_encoder_problems(cfg),
        *_device_problems(cfg),
        *_animator_problems(cfg),
        *_picture_problems(cfg),
        *_framing_problems(cfg),
        *_job_problems(cfg),
    ]


#: what to write for an option a preset leaves required (``???``), shown when it is not given
REQUIRED_EXAMPLES = {"storage.output_root": "s3://<bucket>/<prefix>"}


def missing_problems(cfg: DictConfig) -> list[str]:
    """A line for each required option (``???``) the composed config leaves without a value."""
    return [
        f"{key} is required (the config gives it no value): add it to the command line, e.g. "
        f"{key}={REQUIRED_EXAMPLES.get(key, '<value>')}"
        for key in sorted(OmegaConf.missing_keys(cfg))
    ]


def register_configs() -> None:
    """Register the schema with Hydra's ConfigStore (``defaults: [render_schema, ...]``)."""
    from hydra.core.config_store import ConfigStore  # noqa: PLC0415 - hydra only where configs compose

    ConfigStore.instance().store(name="render_schema", node=RenderConfig)
