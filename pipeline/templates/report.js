/* report.html's script: lays the rows (JSON in #report-data) out page by page from the #card
   template, with search, sort, a status filter and paging; keeps each row's driving clip in step
   with its output; seeks the output from its contact sheet; lists a split row's parts; draws
   each row's signals.
   Every text of a row goes in with textContent and every link with setAttribute, so nothing a
   manifest or an error says is ever parsed as HTML. */
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var rows = data.rows;
  var order = data.statusOrder;
  var template = document.getElementById("card");
  var list = document.getElementById("rows");
  var controls = {
    search: document.getElementById("search"),
    status: document.getElementById("status"),
    sort: document.getElementById("sort"),
    direction: document.getElementById("direction"),
    size: document.getElementById("page-size"),
  };
  var state = { query: "", status: "all", sort: "status", reverse: false, page: 0, size: data.pageSize };
  var renders = 0;

  rows.forEach(function (row, index) {
    var extra = row.extra || {};
    var words = [row.id, row.error || "", row.worker || "", row.parts ? row.parts.caption : ""];
    Object.keys(extra).forEach(function (key) { words.push(key + " " + extra[key]); });
    row.index = index;
    row.haystack = words.join("\n").toLowerCase();
    var rendered = row.rendered || {};
    row.sortSeconds = row.seconds > 0 ? row.seconds : rendered.seconds;
    row.sortFps = row.fps > 0 ? row.fps : rendered.fps;
    row.sortDuration = row.output ? row.output.duration : null;
  });

  // ---------------------------------------------------------------- which rows, in which order
  var collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });
  var compare = {
    status: function (a, b) { return rank(a) - rank(b); },
    id: function (a, b) { return collator.compare(a.id, b.id); },
    seconds: byNumber("sortSeconds"),
    duration: byNumber("sortDuration"),
    fps: byNumber("sortFps"),
  };
  function rank(row) { return row.status in order ? order[row.status] : 9; }
  function byNumber(key) {
    return function (a, b) {
      var x = a[key], y = b[key];
      var missingX = typeof x !== "number", missingY = typeof y !== "number";
      if (missingX || missingY) return missingX === missingY ? 0 : missingX ? 1 : -1;
      return x - y;
    };
  }

  function selected() {
    var query = state.query.trim().toLowerCase();
    var found = rows.filter(function (row) {
      return (state.status === "all" || row.status === state.status) &&
        (!query || row.haystack.indexOf(query) >= 0);
    });
    var by = compare[state.sort] || compare.status;
    var sign = state.reverse ? -1 : 1;
    found.sort(function (a, b) { return sign * by(a, b) || a.index - b.index; });
    return found;
  }

  // ---------------------------------------------------------------- laying a page out
  function render() {
    var found = selected();
    var pages = Math.max(1, Math.ceil(found.length / state.size));
    state.page = Math.min(Math.max(0, state.page), pages - 1);
    var first = state.page * state.size;
    var shown = found.slice(first, first + state.size);
    // a page being left frees its clips' media players now: detached <video>s keep theirs until
    // garbage collection, and Chromium refuses new players past a fixed count, so after a dozen
    // searches or page turns a page of clips could stay blank
    list.querySelectorAll("video").forEach(function (video) {
      video.pause();
      video.removeAttribute("src");
      video.load();
    });
    var fragment = document.createDocumentFragment();
    shown.forEach(function (row) { fragment.appendChild(card(row)); });
    if (!shown.length) {
      fragment.appendChild(element("p", "empty", rows.length ? "No row matches." : "This job has no rows."));
    }
    list.replaceChildren(fragment);
    var range = found.length ? (first + 1) + "–" + (first + shown.length) + " of " + found.length : "0";
    document.getElementById("count").textContent =
      "rows " + range + (found.length !== rows.length ? " (" + rows.length + " in all)" : "");
    ["page", "page2"].forEach(function (id) {
      document.getElementById(id).textContent = "page " + (state.page + 1) + " of " + pages;
    });
    ["prev", "prev2"].forEach(function (id) { document.getElementById(id).disabled = state.page === 0; });
    ["next", "next2"].forEach(function (id) { document.getElementById(id).disabled = state.page >= pages - 1; });
    document.querySelectorAll(".tile[data-filter]").forEach(function (tile) {
      tile.classList.toggle("on", tile.dataset.filter === state.status && state.status !== "all");
    });
    renders += 1;
    document.documentElement.dataset.renders = String(renders);
    if (renders === 1) document.documentElement.dataset.firstPageMs = String(Math.round(performance.now()));
  }

  function element(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function number(value, digits) {
    if (typeof value !== "number") return "–";
    return value.toLocaleString("en-US", { minimumFractionDigits: digits || 0, maximumFractionDigits: digits || 0 });
  }

  function card(row) {
    var node = template.content.firstElementChild.cloneNode(true);
    var part = function (name) { return node.querySelector('[data-f="' + name + '"]'); };
    var drop = function (name) { var p = part(name); if (p) p.remove(); };
    node.classList.add("st-" + row.status);
    node.dataset.status = row.status;
    node.id = "row-" + row.stem;
    part("id").textContent = row.id;
    part("id").title = row.id;
    part("status").textContent = row.label;
    part("status").classList.add("st-" + row.status);

    var keys = Object.keys(row.extra || {});
    keys.forEach(function (key) {
      var chip = element("li");
      chip.appendChild(element("b", null, key));
      chip.appendChild(element("span", null, row.extra[key]));
      part("extra").appendChild(chip);
    });
    if (!keys.length) drop("extra");

    var notes = [];
    var portrait = row.portrait || {};
    if (portrait.thumb) {
      part("portrait-img").src = portrait.thumb;
      part("portrait-img").alt = "portrait of " + row.id + (portrait.framed ? " with the face found" : "");
      if (portrait.src) part("portrait-link").href = portrait.src;
      else part("portrait-link").replaceWith(part("portrait-img"));
      if (portrait.framed) part("portrait-caption").textContent = "portrait · face found (green), square animated (white)";
    } else drop("portrait");
    if (portrait.note) notes.push(portrait.note);

    var driving = row.driving || {};
    if (driving.src) part("driving-video").src = driving.src;
    else drop("driving");
    if (driving.note) notes.push(driving.note);

    var output = row.output;
    var hasMedia = !!output;
    if (output && output.src) {
      var video = part("output-video");
      video.src = output.src;
      if (output.poster) video.poster = output.poster;
      if (output.width && output.height) { video.width = output.width; video.height = output.height; }
      video.appendChild(element("a", null, row.id)).href = output.src;
      if (driving.src) follow(video, part("driving-video"), output.rate);
    } else drop("output");
    if (!node.querySelector(".trio figure")) drop("trio");

    if (output && output.sheet) sheet(part, row, output);
    else drop("sheet");

    if (hasMedia && row.problem) notes.push(row.problem);
    if (notes.length) part("note").textContent = notes.join(" · ");
    else drop("note");

    var errorBox = "error";
    if (hasMedia) {
      drop("media-error");
      drop("media-none");
    } else if (row.failure && row.error) {
      part("media-error-text").textContent = row.error;
      drop("media-none");
      errorBox = null;
    } else {
      part("media-none").textContent = row.problem || "no output video";
      drop("media-error");
    }
    if (errorBox && row.error && row.failure) part("error-text").textContent = row.error;
    else drop("error");
    if (row.error && !row.failure) part("reason-text").textContent = row.error;
    else drop("reason");

    [["frames", number(row.frames)], ["time", number(row.seconds, 1) + " s"],
     ["speed", number(row.fps, 1) + " fps"], ["attempts", number(row.attempts)]].forEach(function (pair) {
      var cell = element("div");
      cell.appendChild(element("dt", null, pair[0]));
      cell.appendChild(element("dd", null, pair[1]));
      part("stats").appendChild(cell);
    });
    part("meta").textContent = row.meta;
    if (row.parts) parts(part, row.parts);
    else drop("parts");

    var rendered = row.rendered;
    if (rendered && (rendered.run || rendered.at)) {
      var said = ["rendered"];
      if (rendered.run) said.push(rendered.run === data.runId ? "in this run" : "by run " + rendered.run);
      if (rendered.at) said.push(rendered.at);
      var figures = [];
      if (typeof rendered.frames === "number") figures.push(number(rendered.frames) + " frames");
      if (typeof rendered.seconds === "number") figures.push(number(rendered.seconds, 1) + " s");
      if (typeof rendered.fps === "number") figures.push(number(rendered.fps, 1) + " fps");
      if (rendered.worker) figures.push("on " + rendered.worker);
      part("rendered").textContent = said.join(" ") + (figures.length ? ": " + figures.join(", ") : "");
    } else drop("rendered");

    if (row.signals && (row.signals.identity || row.signals.motion)) signals(part, row.signals);
    else drop("signals");
    return node;
  }

  // ---------------------------------------------------------------- a split row's parts
  function parts(part, split) {
    part("parts-caption").textContent = split.caption;
    split.items.forEach(function (item) {
      var line = element("tr", "st-" + item.status);
      [[item.part], [item.frames], [item.worker || "–"], [number(item.seconds, 1) + " s", "num"],
       [number(item.fps, 1) + " fps", "num"], [item.label, "status"]].forEach(function (cell) {
        line.appendChild(element("td", cell[1], cell[0]));
      });
      part("parts-body").appendChild(line);
    });
  }

  // ---------------------------------------------------------------- contact sheet: seek on click
  function sheet(part, row, output) {
    part("sheet-img").src = output.sheet;
    part("sheet-img").alt = output.times.length + " frames of " + row.id;
    part("cells").style.setProperty("--cols", output.columns);
    output.times.forEach(function (t, i) {
      var button = element("button");
      button.type = "button";
      button.dataset.t = t.toFixed(3);
      button.title = "play from " + output.labels[i];
      button.appendChild(element("span", "sr", output.labels[i]));
      part("cells").appendChild(button);
    });
    part("sheet-caption").textContent = output.times.length + " frames across the video" +
      (output.src ? " · click one to play from there" : "");
  }

  list.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest(".cells button[data-t]");
    if (!button) return;
    var video = button.closest(".card").querySelector("video.output");
    if (!video) return;
    video.currentTime = parseFloat(button.dataset.t);
    var playing = video.play();
    if (playing && playing.catch) playing.catch(function () {});
  });

  // ---------------------------------------------------------------- the driving clip follows
  /* The driving clip has no controls of its own: it plays, pauses, seeks and changes speed with
     the output. While both play, a drift of more than a frame is taken back by running the
     driving clip a little faster or slower; a large one (or any while paused) by seeking it. */
  function follow(output, driving, rate) {
    var frame = 1 / (rate || 25);
    var looping = false;
    function play(video) {
      var started = video.play();
      if (started && started.catch) started.catch(function () {});
    }
    function sync() {
      var t = output.currentTime;
      var end = isFinite(driving.duration) ? driving.duration : Infinity;
      var drift = Math.min(t, end) - driving.currentTime;
      var base = output.playbackRate;
      if (output.paused || output.seeking || t >= end) {
        if (!driving.paused) driving.pause();
        if (Math.abs(drift) > frame / 2) driving.currentTime = Math.min(t, end);
        driving.playbackRate = base;
        return;
      }
      if (Math.abs(drift) > 0.3) {
        driving.currentTime = t;
        driving.playbackRate = base;
      } else if (Math.abs(drift) > frame) {
        driving.playbackRate = base * (1 + Math.max(-0.5, Math.min(0.5, drift * 2)));
      } else {
        driving.playbackRate = base;
      }
      if (driving.paused) play(driving);
    }
    function loop() {
      sync();
      if (!output.paused) requestAnimationFrame(loop);
      else looping = false;
    }
    ["play", "playing", "pause", "seeking", "seeked", "ratechange", "timeupdate", "ended", "waiting"]
      .forEach(function (name) {
        output.addEventListener(name, function () {
          sync();
          if (!output.paused && !looping) { looping = true; requestAnimationFrame(loop); }
        });
      });
  }

  // ---------------------------------------------------------------- signals: a small chart
  // SVG elements in the namespace of the template's chart (no namespace URL in the page)
  var SVG = template.content.querySelector("svg").namespaceURI;
  function svg(tag, attributes) {
    var node = document.createElementNS(SVG, tag);
    Object.keys(attributes).forEach(function (key) { node.setAttribute(key, attributes[key]); });
    return node;
  }

  function signals(part, found) {
    var chart = part("signals-chart");
    var times = found.times;
    var end = times[times.length - 1] || 1;
    var width = 300, height = 80, pad = 4;
    var identity = (found.identity || []).filter(function (v) { return typeof v === "number"; });
    var low = Math.min(0.5, Math.floor(Math.min.apply(null, identity.concat([1])) * 10) / 10);
    var motions = (found.motion || []).concat(found.driving_motion || [])
      .filter(function (v) { return typeof v === "number"; });
    var motionHigh = Math.max.apply(null, motions.concat([1e-6]));
    function line(values, bottom, top, className, title) {
      if (!values) return;
      var points = [];
      values.forEach(function (v, i) {
        if (typeof v !== "number") return;
        var x = pad + (times[i] / end) * (width - 2 * pad);
        var y = height - pad - ((v - bottom) / (top - bottom)) * (height - 2 * pad);
        points.push(x.toFixed(1) + "," + Math.max(0, Math.min(height, y)).toFixed(1));
      });
      if (points.length < 2) return;
      var polyline = svg("polyline", { points: points.join(" "), "class": className, "vector-effect": "non-scaling-stroke" });
      polyline.appendChild(svg("title", {})).textContent = title;
      chart.appendChild(polyline);
    }
    line(found.driving_motion, 0, motionHigh, "dmotion", "driving clip's motion (frame-to-frame change, scaled)");
    line(found.motion, 0, motionHigh, "motion", "output's motion (frame-to-frame change, scaled)");
    line(found.identity, low, 1, "identity", "identity: similarity to the portrait (" + low + "–1)");
    chart.setAttribute("aria-label", "identity and motion over the output's time");
    var summary = [];
    if (identity.length) {
      var worst = 0;
      found.identity.forEach(function (v, i) { if (typeof v === "number" && v < found.identity[worst]) worst = i; });
      summary.push("· identity min " + found.identity[worst].toFixed(2) + " at " + times[worst].toFixed(1) + " s");
    }
    var mean = function (values) {
      var usable = (values || []).filter(function (v) { return typeof v === "number"; });
      return usable.length ? usable.reduce(function (a, b) { return a + b; }, 0) / usable.length : null;
    };
    var mo = mean(found.motion), md = mean(found.driving_motion);
    if (mo !== null && md !== null) summary.push("· mean motion " + mo.toFixed(3) + " vs driving " + md.toFixed(3));
    if (found.model) summary.push("· " + found.model);
    part("signals-summary").textContent = summary.join(" ");
    part("signals-note").textContent = data.signalsNote;
  }

  // ---------------------------------------------------------------- the toolbar
  var typing = null;
  controls.search.addEventListener("input", function () {
    clearTimeout(typing);
    typing = setTimeout(function () { state.query = controls.search.value; state.page = 0; render(); }, 80);
  });
  controls.status.addEventListener("change", function () { state.status = controls.status.value; state.page = 0; render(); });
  controls.sort.addEventListener("change", function () { state.sort = controls.sort.value; state.page = 0; render(); });
  controls.direction.addEventListener("click", function () {
    state.reverse = !state.reverse;
    controls.direction.textContent = state.reverse ? "↑" : "↓";
    state.page = 0;
    render();
  });
  controls.size.addEventListener("change", function () { state.size = parseInt(controls.size.value, 10); state.page = 0; render(); });
  function turn(step) {
    return function () {
      state.page += step;
      render();
      var top = controls.search.closest(".toolbar");
      if (top.getBoundingClientRect().top < 0) top.scrollIntoView();
    };
  }
  ["prev", "prev2"].forEach(function (id) { document.getElementById(id).addEventListener("click", turn(-1)); });
  ["next", "next2"].forEach(function (id) { document.getElementById(id).addEventListener("click", turn(1)); });
  document.querySelectorAll(".tile[data-filter]").forEach(function (tile) {
    tile.addEventListener("click", function () {
      state.status = tile.dataset.filter === state.status ? "all" : tile.dataset.filter;
      controls.status.value = state.status;
      state.page = 0;
      render();
    });
  });

  // A link to #row-<stem> opens the page holding that row.
  function reveal() {
    var wanted = decodeURIComponent(location.hash.replace(/^#row-/, ""));
    if (!wanted || wanted === location.hash) return;
    var position = selected().findIndex(function (row) { return row.stem === wanted; });
    if (position < 0) return;
    state.page = Math.floor(position / state.size);
    render();
    var target = document.getElementById("row-" + wanted);
    if (target) target.scrollIntoView();
  }
  window.addEventListener("hashchange", reveal);

  render();
  reveal();
})();
