// mofusion's page: forms that call the JSON API, and a three.js viewer of the resulting skeletons.
import * as THREE from 'three';
import { OrbitControls } from 'three/addons/controls/OrbitControls.js';

const $ = (id) => document.getElementById(id);
const SPACING = 1.3; // metres between samples shown side by side
const COLORS = [0x2f6fed, 0xe0475b, 0x26a269, 0xd08c00, 0x8a4fd8, 0x0d9aa6, 0x6b7280, 0xc2410c];

// -- viewer --------------------------------------------------------------------------------------
const container = $('viewer');
const renderer = new THREE.WebGLRenderer({ antialias: true, preserveDrawingBuffer: true });
renderer.setPixelRatio(window.devicePixelRatio);
container.appendChild(renderer.domElement);
const scene = new THREE.Scene();
scene.background = new THREE.Color(0xf7f8fa);
const camera = new THREE.PerspectiveCamera(45, 1, 0.05, 200);
camera.position.set(0.6, 1.8, 5.2);
const controls = new OrbitControls(camera, renderer.domElement);
controls.target.set(0, 0.9, 0);
controls.update();
scene.add(new THREE.GridHelper(20, 40, 0x9aa3b5, 0xd5d9e2));

let shown = [];        // {data, lines, points, offset}
let frame = 0, playing = true, lastTime = performance.now(), clock = 0;

function resize() {
  const w = container.clientWidth, h = container.clientHeight;
  renderer.setSize(w, h);
  camera.aspect = w / Math.max(h, 1);
  camera.updateProjectionMatrix();
}
window.addEventListener('resize', resize);
resize();

function clearShown() {
  for (const s of shown) { scene.remove(s.lines); scene.remove(s.points); s.lines.geometry.dispose(); s.points.geometry.dispose(); }
  shown = [];
}

function show(motions) {
  clearShown();
  motions.forEach((data, i) => {
    const bones = data.parents.map((p, j) => [j, p]).filter(([, p]) => p >= 0);
    const lineGeometry = new THREE.BufferGeometry();
    lineGeometry.setAttribute('position', new THREE.BufferAttribute(new Float32Array(bones.length * 6), 3));
    const color = COLORS[i % COLORS.length];
    const lines = new THREE.LineSegments(lineGeometry, new THREE.LineBasicMaterial({ color }));
    const pointGeometry = new THREE.BufferGeometry();
    pointGeometry.setAttribute('position', new THREE.BufferAttribute(new Float32Array(data.parents.length * 3), 3));
    const points = new THREE.Points(pointGeometry, new THREE.PointsMaterial({ color, size: 0.045 }));
    const offset = (i - (motions.length - 1) / 2) * SPACING;
    scene.add(lines); scene.add(points);
    shown.push({ data, bones, lines, points, offset, color });
  });
  const frames = Math.max(...motions.map((m) => m.frames));
  $('timeline').max = String(frames - 1);
  frame = 0; clock = 0;
  drawKeepBar();
  update();
}

function update() {
  const total = Number($('timeline').max) + 1;
  for (const s of shown) {
    const f = Math.min(frame, s.data.frames - 1);
    const joints = s.data.parents.length;
    const p = s.data.positions, base = f * joints * 3;
    const at = (j, k) => p[base + j * 3 + k] + (k === 0 ? s.offset : 0);
    const line = s.lines.geometry.attributes.position.array;
    s.bones.forEach(([j, q], b) => {
      for (let k = 0; k < 3; k++) { line[b * 6 + k] = at(j, k); line[b * 6 + 3 + k] = at(q, k); }
    });
    s.lines.geometry.attributes.position.needsUpdate = true;
    const pts = s.points.geometry.attributes.position.array;
    for (let j = 0; j < joints; j++) for (let k = 0; k < 3; k++) pts[j * 3 + k] = at(j, k);
    s.points.geometry.attributes.position.needsUpdate = true;
    const kept = s.data.kept && s.data.kept[f];
    s.lines.material.color.setHex(kept ? 0x26a269 : s.color);
    s.lines.geometry.computeBoundingSphere(); s.points.geometry.computeBoundingSphere();
  }
  $('timeline').value = String(frame);
  $('frame-label').textContent = `${frame} / ${Math.max(total - 1, 0)}`;
}

function animate(now) {
  requestAnimationFrame(animate);
  const dt = (now - lastTime) / 1000; lastTime = now;
  if (playing && shown.length) {
    const fps = shown[0].data.fps, total = Number($('timeline').max) + 1;
    clock += dt;
    const next = Math.floor(clock * fps) % total;
    if (next !== frame) { frame = next; update(); }
    syncAudio(false);
  }
  controls.update();
  renderer.render(scene, camera);
}
requestAnimationFrame(animate);

$('play').addEventListener('click', () => {
  playing = !playing;
  $('play').textContent = playing ? 'Pause' : 'Play';
  const audio = $('audio');
  if (audio.src) { if (playing) { syncAudio(true); audio.play().catch(() => {}); } else audio.pause(); }
});
$('timeline').addEventListener('input', (e) => {
  frame = Number(e.target.value);
  clock = shown.length ? frame / shown[0].data.fps : 0;
  update(); syncAudio(true);
});

// music, kept in step with the dance's clock
function syncAudio(force) {
  const audio = $('audio');
  if (!audio.src || !shown.length) return;
  if (force || Math.abs(audio.currentTime - clock) > 0.1) audio.currentTime = clock;
}

// -- messages -----------------------------------------------------------------------------------
function showError(message) { const e = $('error'); e.textContent = message; e.hidden = false; }
function clearError() { $('error').hidden = true; }
function setStatus(text, progress) {
  $('status-text').textContent = text;
  $('progress-bar').style.width = `${Math.round(100 * (progress ?? 0))}%`;
}
async function api(url, options) {
  const response = await fetch(url, options);
  let body = null;
  try { body = await response.json(); } catch { body = null; }
  if (!response.ok) {
    let detail = body && body.detail;
    if (Array.isArray(detail)) detail = detail.map((d) => `${(d.loc || []).slice(-1)[0]}: ${d.msg}`).join('; ');
    const retry = response.headers.get('Retry-After');
    throw new Error(`${detail || response.statusText}${retry ? ` (try again in ${retry} s)` : ''}`);
  }
  return body;
}

async function runJob(start, busyButton) {
  clearError();
  busyButton.disabled = true;
  try {
    const { job } = await start();
    let state;
    for (;;) {
      state = await api(`/api/jobs/${job}`);
      setStatus(`${state.kind} ${state.status}…`, state.progress);
      if (state.status === 'done' || state.status === 'failed') break;
      await new Promise((r) => setTimeout(r, 200));
    }
    if (state.status === 'failed') throw new Error(state.error);
    // an edit of a motion made here is shown beside its source
    const ids = state.source ? [state.source, ...state.motions] : state.motions;
    const motions = await Promise.all(ids.map((id) => api(`/api/motions/${id}.json`)));
    show(motions);
    listMotions(motions);
    // a text model with prompt anchors says which trained caption the prompt was read with
    const reading = state.read_with ? ` (read with "${state.read_with}")` : '';
    setStatus(`${state.kind} done: ${motions.length} motion(s)${reading}`, 1);
  } catch (err) {
    showError(err.message);
    setStatus('ready', 0);
  } finally {
    busyButton.disabled = false;
  }
}

function listMotions(motions) {
  const select = $('selected'), list = $('downloads');
  select.innerHTML = ''; list.innerHTML = '';
  motions.forEach((m, i) => {
    select.add(new Option(`#${i + 1} ${m.label}`, m.id));
    const li = document.createElement('li');
    li.append(`#${i + 1} `);
    for (const ext of ['bvh', 'npy', 'mp4']) {
      const a = document.createElement('a');
      a.href = `/api/motions/${m.id}.${ext}`; a.download = `${m.id}.${ext}`; a.textContent = ext.toUpperCase();
      a.id = `download-${i}-${ext}`;
      li.append(a);
    }
    list.append(li);
  });
}

// -- generate -------------------------------------------------------------------------------------
$('generate-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const text = $('prompt').value;
  const body = {
    text, seconds: Number($('seconds').value), samples: Number($('samples').value),
    seed: Number($('seed').value), guidance: Number($('guidance').value),
  };
  runJob(() => api('/api/generate', {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
  }), $('generate'));
});

// -- edit: kept ranges on the timeline ------------------------------------------------------------
let rangeStart = null;
function keepRanges() {
  return $('keep').value.split(',').map((s) => s.trim()).filter(Boolean).map((s) => {
    const [a, b] = s.split('-').map(Number);
    return [a, Number.isFinite(b) ? b : a];
  }).filter(([a, b]) => Number.isFinite(a) && Number.isFinite(b));
}
function drawKeepBar() {
  const bar = $('keep-bar'), total = Number($('timeline').max) + 1;
  bar.innerHTML = '';
  for (const [a, b] of keepRanges()) {
    const span = document.createElement('span');
    span.style.left = `${(100 * a) / total}%`;
    span.style.width = `${(100 * (b - a + 1)) / total}%`;
    bar.append(span);
  }
}
$('keep').addEventListener('input', drawKeepBar);
$('mark-start').addEventListener('click', () => { rangeStart = frame; });
$('mark-end').addEventListener('click', () => {
  if (rangeStart === null) return;
  const [a, b] = [Math.min(rangeStart, frame), Math.max(rangeStart, frame)];
  $('keep').value = [$('keep').value, `${a}-${b}`].filter(Boolean).join(',');
  rangeStart = null;
  drawKeepBar();
});
$('clear-keep').addEventListener('click', () => { $('keep').value = ''; drawKeepBar(); });

$('edit').addEventListener('click', () => {
  const form = new FormData();
  const file = $('upload').files[0];
  if (file) form.append('file', file); else form.append('motion', $('selected').value);
  if ($('keep').value.trim()) form.append('keep', $('keep').value.trim());
  if ($('regenerate').value) form.append('regenerate', $('regenerate').value);
  if ($('edit-text').value.trim()) form.append('text', $('edit-text').value.trim());
  form.append('seed', $('seed').value || '0');
  runJob(() => api('/api/edit', { method: 'POST', body: form }), $('edit'));
});

// -- music ------------------------------------------------------------------------------------------
$('music').addEventListener('change', () => {
  const file = $('music').files[0];
  if (file) $('audio').src = URL.createObjectURL(file);
});
$('dance').addEventListener('click', () => {
  const file = $('music').files[0];
  if (!file) { showError('choose a music file first'); return; }
  const form = new FormData();
  form.append('audio', file);
  form.append('seconds', $('seconds').value || '30');
  form.append('seed', $('seed').value || '0');
  runJob(() => api('/api/dance', { method: 'POST', body: form }), $('dance'));
});

// -- start ------------------------------------------------------------------------------------------
api('/api/info').then((info) => {
  const m = info.models[0];
  $('model-info').textContent = `${m.name} · ${m.fps} fps · ${m.sampler.toUpperCase()} ${m.steps} steps`;
  $('guidance').value = String(m.guidance);
  $('seconds').max = String(info.limits.max_seconds);
  $('samples').max = String(info.limits.max_samples);
  if (!info.music) {
    $('dance').disabled = true;
    $('dance').title = 'no music model loaded: serve --checkpoint a run of --preset dance';
  }
}).catch((err) => showError(`cannot reach the server: ${err.message}`));
