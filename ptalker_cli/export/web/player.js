/* ptalker's HTML player (ptalker_cli/export/html_player.py writes its data; see that module's docstring).
   PtalkerPlayer.create(element, data) builds a player in `element` and returns its API:
   {ready, error, duration, frames, fps, time, playing, heads, seek(t), play(), pause(),
    setWireframe(on), setHeatmap(on), resetView(), positions(head, ids)}. Uses the global PTALKER_THREE. */
(function () {
  "use strict";
  var T3 = window.PTALKER_THREE;

  function bytes(b64) {
    var s = atob(b64), n = s.length, out = new Uint8Array(n);
    for (var i = 0; i < n; i++) out[i] = s.charCodeAt(i);
    return out;
  }
  function typed(b64, Type) {
    var u = bytes(b64);
    return new Type(u.buffer, 0, u.byteLength / Type.BYTES_PER_ELEMENT);
  }

  // One head's animation: pose(f, out) writes the positions at fractional frame f into out (Float32Array 3V).
  function decodeAnim(head, V) {
    var a = head.anim, T = head.frames, n = 3 * V;
    if (a.layout === "frames16") {
      var q = typed(a.positions, Uint16Array), o = a.origin, st = a.step;
      return function (f, out) {
        var i0 = Math.floor(f), i1 = Math.min(i0 + 1, T - 1), w = f - i0, p = i0 * n, r = i1 * n;
        for (var i = 0; i < n; i++) {
          var c = i % 3, v = w > 0 ? (1 - w) * q[p + i] + w * q[r + i] : q[p + i];
          out[i] = o[c] + v * st[c];
        }
      };
    }
    var K = a.components, base = typed(a.base, Float32Array), tq = typed(a.targets, Int16Array);
    var wq = typed(a.weights, Uint16Array), s = a.scale, tg = new Float32Array(tq.length);
    for (var i = 0; i < tq.length; i++) tg[i] = Math.max(tq[i] / 32767, -1) * s;
    var w = new Float64Array(K);
    return function (f, out) {
      var i0 = Math.floor(f), i1 = Math.min(i0 + 1, T - 1), t = f - i0;
      for (var k = 0; k < K; k++) w[k] = ((1 - t) * wq[i0 * K + k] + t * wq[i1 * K + k]) / 65535;
      out.set(base);
      for (k = 0; k < K; k++) {
        var wk = w[k];
        if (wk === 0) continue;
        for (var j = 0, o2 = k * n; j < n; j++) out[j] += wk * tg[o2 + j];
      }
    };
  }

  function heatLut(stops) {
    var lut = new Float32Array(256 * 3), c = new T3.Color();
    for (var i = 0; i < 256; i++) {
      var x = i / 255, k = 1;
      while (k < stops.length - 1 && x > stops[k][0]) k++;
      var a = stops[k - 1], b = stops[k], u = Math.min(1, Math.max(0, (x - a[0]) / (b[0] - a[0])));
      c.setRGB(a[1][0] + u * (b[1][0] - a[1][0]), a[1][1] + u * (b[1][1] - a[1][1]), a[1][2] + u * (b[1][2] - a[1][2]),
        T3.SRGBColorSpace);
      lut[3 * i] = c.r; lut[3 * i + 1] = c.g; lut[3 * i + 2] = c.b;
    }
    return lut;
  }

  function el(tag, attrs, parent, text) {
    var e = document.createElement(tag);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    if (parent) parent.appendChild(e);
    return e;
  }

  function fmt(t) { return t.toFixed(2) + " s"; }

  function create(root, data) {
    var api = { ready: false, error: null, duration: data.duration, frames: data.frames, fps: data.fps, time: 0,
      playing: false, heads: data.heads.length, wireframe: false, heatmap: !!data.heatmap, audio: false };
    try { build(root, data, api); } catch (e) { api.error = String(e && e.message || e); throw e; }
    return api;
  }

  function build(root, data, api) {
    var V = data.vertices, nH = data.heads.length;
    root.textContent = "";
    var stage = el("div", { "class": "stage" }, root), canvas = el("canvas", {}, stage);
    var labels = el("div", { "class": "labels" }, stage);
    if (nH > 1) data.heads.forEach(function (h) { el("span", {}, labels, h.label); });
    var bar = el("div", { "class": "bar" }, root);
    var bPlay = el("button", { type: "button", "class": "play" }, bar, "play");
    var scrub = el("input", { type: "range", min: "0", max: String(data.duration), step: "0.001", value: "0",
      "class": "scrubber", "aria-label": "time" }, bar);
    var tLabel = el("span", { "class": "time" }, bar, fmt(0) + " / " + fmt(data.duration));
    var bReset = el("button", { type: "button", "class": "reset" }, bar, "reset view");
    var wLabel = el("label", {}, bar), cWire = el("input", { type: "checkbox", "class": "wireframe" }, wLabel);
    wLabel.appendChild(document.createTextNode(" wireframe"));
    var cHeat = null;
    if (data.heatmap) {
      var hLabel = el("label", {}, bar);
      cHeat = el("input", { type: "checkbox", "class": "heatmap" }, hLabel);
      cHeat.checked = true;
      hLabel.appendChild(document.createTextNode(" error heat map"));
      var legend = el("span", { "class": "legend" }, bar);
      var unit = data.units === "normalized" ? "" : " " + data.units;
      el("span", {}, legend, "0");
      var grad = el("i", {}, legend);
      grad.style.background = "linear-gradient(to right," + data.heatmap.stops.map(function (s) {
        return "rgb(" + s[1].map(function (x) { return Math.round(255 * x); }).join(",") + ") " + (100 * s[0]) + "%";
      }).join(",") + ")";
      el("span", {}, legend, data.heatmap.vmax.toPrecision(3) + unit + " (99th pct.)");
    }

    // --- the scene: a grey head per motion side by side, camera-fixed key and fill lights, orbit controls
    var renderer = new T3.WebGLRenderer({ canvas: canvas, antialias: true, preserveDrawingBuffer: true });
    renderer.setPixelRatio(Math.min(window.devicePixelRatio || 1, 2));
    renderer.setClearColor(0xffffff, 1);
    var scene = new T3.Scene(), camera = new T3.PerspectiveCamera(22, 1, 0.01, 100);
    scene.add(camera);
    scene.add(new T3.HemisphereLight(0xffffff, 0x505050, 0.9));
    [[-0.5, 0.5, 0.7, 2.0], [0.65, -0.15, 0.75, 0.6]].forEach(function (l) {
      var d = new T3.DirectionalLight(0xffffff, l[3]);
      d.position.set(l[0], l[1], l[2]);
      camera.add(d);
      camera.add(d.target);
    });
    var faces = data.faces_type === "u32" ? typed(data.faces, Uint32Array) : typed(data.faces, Uint16Array);
    var heads = data.heads.map(function (h) {
      var pos = new Float32Array(3 * V), g = new T3.BufferGeometry();
      var pose = decodeAnim(h, V);
      pose(0, pos);
      g.setAttribute("position", new T3.BufferAttribute(pos, 3));
      g.setIndex(new T3.BufferAttribute(faces, 1));
      g.computeVertexNormals();
      var mat = new T3.MeshStandardMaterial({ roughness: 0.65, metalness: 0, side: T3.DoubleSide });
      mat.color.setRGB(0.55, 0.55, 0.55);
      var mesh = new T3.Mesh(g, mat);
      scene.add(mesh);
      return { pose: pose, pos: pos, geom: g, mat: mat, mesh: mesh, frames: h.frames, fps: h.fps };
    });
    var lut = null, colors = null;
    if (data.heatmap) {
      lut = heatLut(data.heatmap.stops);
      colors = new Float32Array(3 * V).fill(1);
      heads[0].geom.setAttribute("color", new T3.BufferAttribute(colors, 3));
    }
    // lay the heads out side by side along x, gaps of 15 % of a head's width
    var box = new T3.Box3().setFromBufferAttribute(heads[0].geom.attributes.position), size = new T3.Vector3();
    box.getSize(size);
    heads.forEach(function (h, i) { h.mesh.position.x = i * size.x * 1.15; });
    var all = new T3.Box3();
    heads.forEach(function (h) { h.mesh.updateMatrixWorld(true); all.expandByObject(h.mesh); });
    var center = all.getCenter(new T3.Vector3()), span = all.getSize(new T3.Vector3());
    var controls = new T3.OrbitControls(camera, canvas);

    function frameCamera() {
      var aspect = camera.aspect, tanH = Math.tan(camera.fov * Math.PI / 360);
      var dist = span.z / 2 + Math.max(span.y / 2, span.x / 2 / aspect) / 0.9 / tanH;
      camera.position.set(center.x, center.y, center.z + dist);
      camera.near = dist / 100; camera.far = dist * 10;
      camera.updateProjectionMatrix();
      controls.target.copy(center);
      controls.update();
    }
    function resize() {
      var w = Math.max(1, stage.clientWidth), h = Math.max(1, stage.clientHeight);
      renderer.setSize(w, h, false);
      camera.aspect = w / h;
      camera.updateProjectionMatrix();
    }
    resize();
    frameCamera();
    controls.saveState();
    controls.addEventListener("change", function () { draw(); });

    function setHeat(on) {
      if (!data.heatmap) return;
      api.heatmap = !!on;
      heads[0].mat.vertexColors = api.heatmap;
      heads[0].mat.needsUpdate = true;
      if (cHeat) cHeat.checked = api.heatmap;
    }
    function pose(t) {
      heads.forEach(function (h) {
        h.pose(Math.min(Math.max(t * h.fps, 0), h.frames - 1), h.pos);
        h.geom.attributes.position.needsUpdate = true;
        h.geom.computeVertexNormals();
      });
      if (colors && heads.length > 1) {
        var p = heads[0].pos, q = heads[1].pos, s = 255 / data.heatmap.vmax;
        for (var v = 0; v < V; v++) {
          var dx = p[3 * v] - q[3 * v], dy = p[3 * v + 1] - q[3 * v + 1], dz = p[3 * v + 2] - q[3 * v + 2];
          var k = 3 * Math.min(255, Math.round(Math.sqrt(dx * dx + dy * dy + dz * dz) * s));
          colors[3 * v] = lut[k]; colors[3 * v + 1] = lut[k + 1]; colors[3 * v + 2] = lut[k + 2];
        }
        heads[0].geom.attributes.color.needsUpdate = true;
      }
    }
    function draw() { renderer.render(scene, camera); }
    function show(t) {
      api.time = Math.min(Math.max(t, 0), api.duration);
      pose(api.time);
      draw();
      scrub.value = String(api.time);
      tLabel.textContent = fmt(api.time) + " / " + fmt(api.duration);
    }

    // --- time: the audio's clock when it plays, else the page's own
    var audio = null, clock0 = 0, time0 = 0;
    function now() {
      if (!api.playing) return api.time;
      if (api.audio && !audio.paused) return audio.currentTime;
      return time0 + (performance.now() - clock0) / 1000;
    }
    api.seek = function (t) {
      t = Number(t) || 0;
      if (audio && api.audio) { try { audio.currentTime = Math.min(Math.max(t, 0), api.duration); } catch (e) { /* not seekable yet */ } }
      time0 = t; clock0 = performance.now();
      show(t);
      return api.time;
    };
    api.play = function () {
      if (api.time >= api.duration - 1e-3) api.seek(0);
      api.playing = true; bPlay.textContent = "pause";
      time0 = api.time; clock0 = performance.now();
      if (audio && api.audio) {
        var p = audio.play();
        if (p && p.catch) p.catch(function () { time0 = api.time; clock0 = performance.now(); });  // no sound (autoplay rules): the page's clock
      }
      requestAnimationFrame(tick);
    };
    api.pause = function () {
      var t = now();
      api.playing = false; bPlay.textContent = "play";
      if (audio) audio.pause();
      show(t);
    };
    function tick() {
      if (!api.playing) return;
      var t = now();
      if (t >= api.duration) { show(api.duration); api.pause(); return; }
      show(t);
      requestAnimationFrame(tick);
    }
    api.setWireframe = function (on) {
      api.wireframe = !!on; cWire.checked = api.wireframe;
      heads.forEach(function (h) { h.mat.wireframe = api.wireframe; });
      draw();
    };
    api.setHeatmap = function (on) { setHeat(on); show(api.time); };
    api.resetView = function () { controls.reset(); draw(); };
    api.positions = function (head, ids) {
      var p = heads[head].pos;
      return ids.map(function (i) { return [p[3 * i], p[3 * i + 1], p[3 * i + 2]]; });
    };

    bPlay.addEventListener("click", function () { if (api.playing) api.pause(); else api.play(); });
    scrub.addEventListener("input", function () { api.seek(parseFloat(scrub.value)); });
    bReset.addEventListener("click", api.resetView);
    cWire.addEventListener("change", function () { api.setWireframe(cWire.checked); });
    if (cHeat) cHeat.addEventListener("change", function () { api.setHeatmap(cHeat.checked); });
    window.addEventListener("resize", function () { resize(); draw(); });
    setHeat(api.heatmap);

    function finish(note) {
      if (note) el("div", { "class": "note" }, root, note);
      scrub.max = String(api.duration);
      show(0);
      api.ready = true;
    }
    if (!data.audio) { finish(); return; }
    audio = el("audio", { preload: "auto" }, root);
    audio.addEventListener("ended", function () { if (api.playing) api.pause(); });
    var done = false;
    audio.addEventListener("loadedmetadata", function () {
      if (done) return;
      done = true;
      api.audio = true;
      if (isFinite(audio.duration) && audio.duration > 0) api.duration = audio.duration;
      finish();
    });
    audio.addEventListener("error", function () {
      if (done) return;
      done = true;
      finish("This browser cannot play the sound (Opus in WebM); the motion plays without it.");
    });
    audio.src = URL.createObjectURL(new Blob([bytes(data.audio.data)], { type: data.audio.mime }));
  }

  window.PtalkerPlayer = { create: create };
})();
