// photoseek search page: progressive enhancement of the server-rendered page.
// Plain JavaScript, no build step. Data from the server is only ever put into the page
// with textContent / attributes, never innerHTML.
(() => {
  'use strict';

  const body = document.body;
  const ROOT = body.dataset.root || '';
  const PAGE = Number(body.dataset.pageSize) || 36;
  const MAX_UPLOAD = Number(body.dataset.maxUpload) || 25 * 1024 * 1024;
  const MAX_QUERY = Number(body.dataset.maxQuery) || 500;

  const $ = (id) => document.getElementById(id);
  const grid = $('grid');
  const noticeSlot = $('notice');
  const summary = $('summary');
  const moreWrap = $('more-wrap');
  const moreBtn = $('more');
  const input = $('q');
  const form = $('search-form');
  const fileInput = $('file');
  const drop = $('drop');
  const dialog = $('detail');
  const welcome = $('welcome');

  // What is on screen now.
  let view = { kind: null, query: '', similar: null, source: null, upload: null, uploadName: null, results: [], next: null };
  let seq = 0; // guards against answers to superseded requests
  let loadingMore = false;
  let detailIndex = -1;
  const uploads = new Map(); // upload key -> {blob, url}
  const cache = new Map(); // view key -> view (for the back button)

  // -- helpers -------------------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === 'class') node.className = value;
      else if (key === 'text') node.textContent = value;
      else node.setAttribute(key, value === true ? '' : String(value));
    }
    for (const child of children) if (child) node.append(child);
    return node;
  }

  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function api(path, options = {}) {
    let response;
    try {
      response = await fetch(ROOT + path, { credentials: 'same-origin', headers: { Accept: 'application/json' }, ...options });
    } catch (err) {
      throw new ApiError(0, 'the server cannot be reached; is photoseek serve still running?');
    }
    let data = null;
    try { data = await response.json(); } catch (err) { /* not JSON */ }
    if (response.status === 401) { window.location.assign(ROOT + '/login?next=' + encodeURIComponent(location.pathname + location.search)); }
    if (!response.ok) throw new ApiError(response.status, (data && data.message) || `the server answered ${response.status}`);
    return data;
  }

  const capitalise = (s) => s ? s[0].toUpperCase() + s.slice(1) : s;
  const setBusy = (busy) => body.classList.toggle('busy', busy);

  function humanSize(n) {
    if (n === null || n === undefined) return '—';
    const units = ['bytes', 'KB', 'MB', 'GB', 'TB'];
    let i = 0;
    let size = n;
    while (size >= 1024 && i < units.length - 1) { size /= 1024; i += 1; }
    return i === 0 ? `${size} bytes` : `${size.toFixed(1)} ${units[i]}`;
  }

  function formatDate(iso) {
    if (!iso) return '—';
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return iso;
    return date.toLocaleString(undefined, { year: 'numeric', month: 'long', day: 'numeric', hour: '2-digit', minute: '2-digit' });
  }

  // -- notices -------------------------------------------------------------------------------

  function showNotice(level, title, text, code) {
    noticeSlot.replaceChildren();
    if (!title) return;
    const box = el('section', { class: `notice notice-${level}`, role: level === 'error' ? 'alert' : 'status' },
      el('h2', { class: 'notice-title', text: title }),
      text ? el('p', { class: 'notice-text', text }) : null,
      code ? el('pre', { class: 'notice-code' }, el('code', { text: code })) : null);
    if (level === 'error') {
      const close = el('button', { class: 'notice-close', type: 'button', 'aria-label': 'Dismiss', text: '×' });
      close.addEventListener('click', () => noticeSlot.replaceChildren());
      box.append(close);
    }
    noticeSlot.append(box);
  }

  function showError(err, context) {
    const title = {
      413: 'That file is too large',
      415: 'That is not a photo we can read',
      404: 'That photo is not in the index',
      503: 'No photos to search yet',
    }[err.status] || (context === 'upload' ? 'Could not search by that image' : 'That did not work');
    const code = err.status === 503 ? 'photoseek index ~/Pictures' : null;
    showNotice('error', title, capitalise(err.message) + '.', code);
  }

  // -- rendering -----------------------------------------------------------------------------

  function tile(hit, index) {
    const photo = hit.photo;
    const score = hit.score.toFixed(3);
    const img = el('img', {
      src: photo.thumbnail_url, alt: photo.name, width: photo.width, height: photo.height,
      loading: 'lazy', decoding: 'async', draggable: 'true',
    });
    img.addEventListener('error', () => figure.classList.add('broken'), { once: true });
    const link = el('a', { class: 'tile-link', href: photo.page_url, title: `${photo.name} · score ${score}` }, img);
    link.addEventListener('click', (event) => {
      if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
      event.preventDefault();
      openDetail(index, true);
    });
    const similarBtn = el('button', { class: 'tile-similar', type: 'button', text: 'Similar', title: `Photos like ${photo.name}` });
    similarBtn.addEventListener('click', () => searchSimilar(photo.id, photo, true));
    const figure = el('figure', { class: 'tile', 'data-index': index, 'data-id': photo.id },
      link,
      el('figcaption', { class: 'tile-caption' },
        el('span', { class: 'tile-name', text: photo.name }),
        el('span', { class: 'score', text: score })),
      similarBtn);
    // Justified rows: each tile grows in proportion to its aspect ratio (CSSOM, allowed by the CSP).
    const ratio = Math.min(3, Math.max(0.4, (photo.width || 1) / (photo.height || 1)));
    figure.style.setProperty('--ar', ratio.toFixed(4));
    return figure;
  }

  function renderSummary() {
    summary.replaceChildren();
    const clear = () => {
      const a = el('a', { class: 'chip-clear', href: ROOT + '/', 'aria-label': 'Clear search', text: '×' });
      a.addEventListener('click', (event) => { event.preventDefault(); goHome(true); });
      return a;
    };
    if (view.kind === 'similar' && view.source) {
      const chip = el('a', { class: 'chip', href: view.source.page_url },
        el('img', { src: view.source.thumbnail_url, alt: '' }), view.source.name);
      chip.addEventListener('click', (event) => { event.preventDefault(); openSourceDetail(); });
      summary.append(el('span', { class: 'summary-label', text: 'Photos like' }), chip, clear());
    } else if (view.kind === 'image') {
      const entry = view.upload && uploads.get(view.upload);
      const chip = el('span', { class: 'chip' },
        entry ? el('img', { src: entry.url, alt: '' }) : null, view.uploadName || 'your image');
      summary.append(el('span', { class: 'summary-label', text: 'Photos like' }), chip, clear());
    } else if (view.kind === 'text' && view.results.length) {
      summary.append(el('span', { class: 'summary-label' }, 'Best matches for ', el('strong', { text: view.query })));
    }
    summary.hidden = !summary.childElementCount;
  }

  function render() {
    grid.replaceChildren(...view.results.map((hit, i) => tile(hit, i)));
    renderSummary();
    if (welcome) welcome.hidden = view.kind !== null;
    updateMore();
    if (view.kind && !view.results.length) {
      showNotice('info', view.kind === 'text' ? `No photos match “${view.query}”` : 'No similar photos found',
        'Try other words, or search by a photo: drop one on the page, paste it, or pick a file.');
    }
    document.title = view.kind === 'text' ? `${view.query} · photoseek`
      : view.kind === 'similar' && view.source ? `Like ${view.source.name} · photoseek` : 'photoseek';
  }

  function updateMore() {
    const canMore = view.next !== null && view.next !== undefined && (view.kind !== 'image' || uploads.has(view.upload));
    moreWrap.hidden = !canMore;
    moreBtn.href = canMore && view.kind === 'text' ? `${ROOT}/?q=${encodeURIComponent(view.query)}` : '#';
  }

  // -- history -------------------------------------------------------------------------------

  function viewKey(v) {
    return v.kind === 'text' ? `text:${v.query}` : v.kind === 'similar' ? `similar:${v.similar}` : v.kind === 'image' ? `image:${v.upload}` : 'home';
  }

  function urlFor(v) {
    if (v.kind === 'text') return `${ROOT}/?q=${encodeURIComponent(v.query).replace(/%20/g, '+')}`;
    if (v.kind === 'similar') return `${ROOT}/?similar=${v.similar}`;
    return `${ROOT}/`;
  }

  function stateFor(v, detail) {
    // Enough to show the view again after back/forward, even after a reload.
    return { kind: v.kind, query: v.query, similar: v.similar, upload: v.upload, uploadName: v.uploadName, detail: detail ?? null };
  }

  function commit(push) {
    cache.set(viewKey(view), view);
    if (view.kind === 'image') {
      // Uploads cannot be put in a URL: keep their results in the history entry instead.
      const state = { ...stateFor(view), results: view.results, next: view.next };
      if (push) history.pushState(state, '', urlFor(view)); else history.replaceState(state, '', urlFor(view));
      return;
    }
    if (push) history.pushState(stateFor(view), '', urlFor(view));
    else history.replaceState(stateFor(view), '', urlFor(view));
  }

  // -- searches ------------------------------------------------------------------------------

  async function run(next, fetcher, push) {
    const mine = ++seq;
    setBusy(true);
    try {
      const data = await fetcher();
      if (mine !== seq) return false;
      noticeSlot.replaceChildren();
      view = { ...next, source: data.source || next.source || null, results: data.results, next: data.next_offset };
      commit(push);
      render();
      window.scrollTo({ top: 0 });
      return true;
    } catch (err) {
      if (mine !== seq) return false;
      showError(err, next.kind === 'image' ? 'upload' : 'search');
      return false;
    } finally {
      if (mine === seq) setBusy(false);
    }
  }

  function searchText(query, push) {
    query = query.trim().replace(/\s+/g, ' ');
    if (!query) { goHome(push); return Promise.resolve(false); }
    if (query.length > MAX_QUERY) {
      showNotice('error', 'That query is too long', `Keep it under ${MAX_QUERY} characters.`);
      return Promise.resolve(false);
    }
    input.value = query;
    const cached = !push && cache.get(`text:${query}`);
    if (cached) { view = cached; commit(false); noticeSlot.replaceChildren(); render(); return Promise.resolve(true); }
    return run({ kind: 'text', query, similar: null, upload: null },
      () => api(`/api/search?q=${encodeURIComponent(query)}&limit=${PAGE}`), push);
  }

  function searchSimilar(id, source, push) {
    closeDetailNow();
    input.value = '';  // the box shows the search being answered: this one is by a photo (its chip), not by words
    const cached = !push && cache.get(`similar:${id}`);
    if (cached) { view = cached; commit(false); noticeSlot.replaceChildren(); render(); return Promise.resolve(true); }
    return run({ kind: 'similar', query: '', similar: id, source: source || null, upload: null },
      () => api(`/api/images/${id}/similar?limit=${PAGE}`), push);
  }

  function searchUpload(blob, name, push) {
    closeDetailNow();
    if (!blob) return Promise.resolve(false);
    if (blob.size > MAX_UPLOAD) {
      showError(new ApiError(413, `the limit is ${humanSize(MAX_UPLOAD)} and this file is ${humanSize(blob.size)}`), 'upload');
      return Promise.resolve(false);
    }
    const key = `u${Date.now().toString(36)}${Math.random().toString(36).slice(2, 7)}`;
    uploads.set(key, { blob, url: URL.createObjectURL(blob) });
    input.value = '';
    return run({ kind: 'image', query: '', similar: null, upload: key, uploadName: name || 'your image' },
      () => postImage(blob, name, 0), push).then((ok) => {
      if (!ok) { URL.revokeObjectURL(uploads.get(key).url); uploads.delete(key); }
      return ok;
    });
  }

  function postImage(blob, name, offset) {
    const data = new FormData();
    data.append('file', blob, name || 'image');
    return api(`/api/search/image?limit=${PAGE}&offset=${offset}`, { method: 'POST', body: data });
  }

  function goHome(push) {
    seq += 1;
    setBusy(false);
    closeDetailNow();
    view = { kind: null, query: '', similar: null, source: null, upload: null, uploadName: null, results: [], next: null };
    input.value = '';
    noticeSlot.replaceChildren();
    commit(push);
    render();
    input.focus();
  }

  async function loadMore() {
    if (loadingMore || view.next === null || view.next === undefined) return false;
    const current = view;
    const offset = view.next;
    let fetcher;
    if (view.kind === 'text') fetcher = () => api(`/api/search?q=${encodeURIComponent(view.query)}&limit=${PAGE}&offset=${offset}`);
    else if (view.kind === 'similar') fetcher = () => api(`/api/images/${view.similar}/similar?limit=${PAGE}&offset=${offset}`);
    else if (view.kind === 'image' && uploads.has(view.upload)) fetcher = () => postImage(uploads.get(view.upload).blob, view.uploadName, offset);
    else return false;
    loadingMore = true;
    moreBtn.classList.add('loading');
    try {
      const data = await fetcher();
      if (current !== view) return false;
      const start = view.results.length;
      view.results = view.results.concat(data.results);
      view.next = data.next_offset;
      grid.append(...data.results.map((hit, i) => tile(hit, start + i)));
      updateMore();
      commit(false);
      return true;
    } catch (err) {
      showError(err, 'search');
      return false;
    } finally {
      loadingMore = false;
      moreBtn.classList.remove('loading');
      // The observer only reports changes: if the end of the grid is still in reach (a tall
      // window, a fast scroll), keep going.
      requestAnimationFrame(nearEnd);
    }
  }

  function nearEnd() {
    if (!moreWrap.hidden && !loadingMore && !dialog.open && moreWrap.getBoundingClientRect().top < window.innerHeight + 800) loadMore();
  }

  // -- detail view ---------------------------------------------------------------------------

  const detailImg = $('detail-img');
  let detailPhoto = null;

  function fillDetail(photo, score) {
    detailPhoto = photo;
    $('detail-name').textContent = photo.name;
    $('detail-path').textContent = photo.path;
    $('detail-path').title = photo.path;
    $('detail-taken').textContent = formatDate(photo.taken_at);
    $('detail-camera').textContent = photo.camera || '—';
    $('detail-size').textContent = humanSize(photo.size_bytes);
    $('detail-dims').textContent = `${photo.width} × ${photo.height}`;
    $('detail-score').textContent = score === null ? '—' : score.toFixed(3);
    $('detail-original').href = photo.file_url;
    // The small thumbnail is usually cached already: show it at once, then swap in the large one.
    detailImg.src = photo.thumbnail_url;
    detailImg.alt = photo.name;
    detailImg.classList.add('preview-loading');
    const large = new Image();
    large.onload = () => {
      if (detailPhoto === photo) { detailImg.src = photo.preview_url; detailImg.classList.remove('preview-loading'); }
    };
    large.src = photo.preview_url;
    $('detail-prev').disabled = detailIndex <= 0;
    $('detail-next').disabled = detailIndex < 0 || (detailIndex >= view.results.length - 1 && view.next == null);
  }

  function openDetail(index, push) {
    const hit = view.results[index];
    if (!hit) return;
    detailIndex = index;
    fillDetail(hit.photo, hit.score);
    if (!dialog.open) dialog.showModal();
    const state = { ...(history.state || stateFor(view)), detail: hit.photo.id };
    if (push && !(history.state && history.state.detail)) history.pushState(state, '', urlFor(view));
    else history.replaceState(state, '', urlFor(view));
    // Keep the grid in step, so closing lands where you are.
    const node = grid.children[index];
    if (node) node.scrollIntoView({ block: 'nearest' });
  }

  function openSourceDetail() {
    if (!view.source) return;
    detailIndex = -1;
    fillDetail(view.source, null);
    if (!dialog.open) dialog.showModal();
  }

  async function step(delta) {
    if (detailIndex < 0) return;
    const target = detailIndex + delta;
    if (target < 0) return;
    if (target >= view.results.length) {
      if (!(await loadMore())) return;
    }
    if (target < view.results.length) openDetail(target, false);
  }

  function closeDetail() {
    if (!dialog.open) return;
    if (history.state && history.state.detail) history.back(); // popstate closes it
    else closeDetailNow();
  }

  let closingQuietly = false;
  function closeDetailNow() {
    closingQuietly = true;
    if (dialog.open) dialog.close();
    closingQuietly = false;
    detailPhoto = null;
    detailIndex = -1;
  }

  dialog.addEventListener('close', () => {
    // Closed by the browser itself (e.g. a second Escape): keep the history in step.
    if (!closingQuietly && history.state && history.state.detail) history.back();
  });

  dialog.addEventListener('cancel', (event) => { event.preventDefault(); closeDetail(); });
  dialog.addEventListener('click', (event) => { if (event.target === dialog) closeDetail(); });
  $('detail-close').addEventListener('click', closeDetail);
  $('detail-prev').addEventListener('click', () => step(-1));
  $('detail-next').addEventListener('click', () => step(1));
  $('detail-similar').addEventListener('click', () => {
    if (!detailPhoto) return;
    const photo = detailPhoto;
    // Replace the detail entry rather than stacking the search on top of it.
    const hadEntry = history.state && history.state.detail;
    closeDetailNow();
    if (hadEntry) history.replaceState(stateFor(view), '', urlFor(view));
    searchSimilar(photo.id, photo, true);
  });

  // -- input: typing, picking, dropping, pasting ---------------------------------------------

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const query = input.value.trim();
    if (!query) { input.focus(); return; }
    if (view.kind === 'text' && view.query === query && !noticeSlot.childElementCount) return;
    searchText(query, true);
  });

  fileInput.addEventListener('change', () => {
    const file = fileInput.files && fileInput.files[0];
    if (file) searchUpload(file, file.name, true);
    fileInput.value = '';
  });

  let dragDepth = 0;
  const carriesSomething = (event) => {
    const types = Array.from(event.dataTransfer ? event.dataTransfer.types : []);
    return types.includes('Files') || types.includes('text/uri-list');
  };
  window.addEventListener('dragenter', (event) => {
    if (!carriesSomething(event)) return;
    event.preventDefault();
    dragDepth += 1;
    drop.hidden = false;
  });
  window.addEventListener('dragover', (event) => {
    if (!carriesSomething(event)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = 'copy';
  });
  window.addEventListener('dragleave', () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (!dragDepth) drop.hidden = true;
  });
  window.addEventListener('drop', (event) => {
    event.preventDefault();
    dragDepth = 0;
    drop.hidden = true;
    const dt = event.dataTransfer;
    const file = dt && Array.from(dt.files || []).find((f) => f.type.startsWith('image/') || !f.type) || (dt && dt.files[0]);
    if (file) { searchUpload(file, file.name, true); return; }
    // A result dragged from this page (or its link): search by that photo.
    const uri = dt && (dt.getData('text/uri-list') || dt.getData('text/plain'));
    const match = uri && uri.match(/\/(?:photos|api\/images)\/(\d+)/);
    if (match) {
      try {
        if (new URL(uri, location.href).origin === location.origin) { searchSimilar(Number(match[1]), null, true); return; }
      } catch (err) { /* not a URL */ }
    }
    showNotice('error', 'Could not search by that', 'Drop an image file from your computer, or a photo from the results.');
  });

  document.addEventListener('paste', (event) => {
    const items = Array.from((event.clipboardData && event.clipboardData.items) || []);
    const item = items.find((it) => it.kind === 'file' && it.type.startsWith('image/'));
    if (!item) return; // ordinary text paste, e.g. into the search box
    event.preventDefault();
    const file = item.getAsFile();
    const ext = (item.type.split('/')[1] || 'png').replace('jpeg', 'jpg');
    searchUpload(file, file && file.name && file.name !== 'image.png' ? file.name : `pasted image.${ext}`, true);
  });

  document.addEventListener('keydown', (event) => {
    if (dialog.open) {
      if (event.key === 'ArrowRight') { event.preventDefault(); step(1); }
      else if (event.key === 'ArrowLeft') { event.preventDefault(); step(-1); }
      return;
    }
    const typing = ['INPUT', 'TEXTAREA', 'SELECT'].includes(document.activeElement && document.activeElement.tagName);
    if (event.key === '/' && !typing) { event.preventDefault(); input.focus(); input.select(); }
  });

  // -- more results: button, and on scroll -----------------------------------------------------

  moreBtn.addEventListener('click', (event) => { event.preventDefault(); loadMore(); });
  if ('IntersectionObserver' in window) {
    new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting) && !moreWrap.hidden) loadMore();
    }, { rootMargin: '800px 0px' }).observe(moreWrap);
  }

  // -- back / forward --------------------------------------------------------------------------

  async function show(state, fromUrl) {
    const s = state || fromUrl;
    let ok = true;
    if (!s.kind) { if (view.kind !== null) goHome(false); }
    else if (s.kind === 'text') { if (!(view.kind === 'text' && view.query === s.query)) ok = await searchText(s.query, false); }
    else if (s.kind === 'similar') { if (!(view.kind === 'similar' && view.similar === s.similar)) ok = await searchSimilar(s.similar, null, false); }
    else if (s.kind === 'image' && view.upload !== s.upload) {
      const cached = cache.get(`image:${s.upload}`);
      view = cached || { kind: 'image', query: '', similar: null, source: null, upload: s.upload, uploadName: s.uploadName, results: s.results || [], next: s.next ?? null };
      render();
    }
    if (ok && s.detail) {
      const index = view.results.findIndex((hit) => hit.photo.id === s.detail);
      if (index >= 0) { detailIndex = index; fillDetail(view.results[index].photo, view.results[index].score); if (!dialog.open) dialog.showModal(); }
    } else if (dialog.open) {
      closeDetailNow();
    }
  }

  window.addEventListener('popstate', (event) => {
    const params = new URLSearchParams(location.search);
    const fromUrl = params.get('q') ? { kind: 'text', query: params.get('q') }
      : params.get('similar') && /^\d+$/.test(params.get('similar')) ? { kind: 'similar', similar: Number(params.get('similar')) }
        : { kind: null };
    show(event.state, fromUrl);
  });

  // -- start: take over what the server rendered ---------------------------------------------

  function start() {
    let initial = {};
    try { initial = JSON.parse($('initial-data').textContent || '{}'); } catch (err) { /* plain page */ }
    body.classList.add('js');
    const restored = history.state;
    if (restored && restored.kind === 'image' && !initial.kind) {
      // A reload or return to an upload's results: the image is gone, its results are not.
      view = { kind: 'image', query: '', similar: null, source: null, upload: restored.upload, uploadName: restored.uploadName, results: restored.results || [], next: null };
      render();
    } else {
      view = {
        kind: initial.kind || null,
        query: initial.query || '',
        similar: initial.similar ?? null,
        source: initial.source || null,
        upload: null,
        uploadName: initial.upload_name || null,
        results: initial.results || [],
        next: initial.kind === 'image' ? null : initial.next_offset ?? null,
      };
      if (!initial.error) {
        grid.replaceChildren(...view.results.map((hit, i) => tile(hit, i)));
        updateMore();
        if (view.kind === 'similar' || view.kind === 'text') renderSummary();
      } else {
        grid.replaceChildren();
      }
      if (view.kind === 'image') {
        history.replaceState({ ...stateFor(view), results: view.results, next: null }, '', urlFor(view));
      } else if (view.kind && !initial.error) {
        cache.set(viewKey(view), view);
        history.replaceState(stateFor(view, restored && restored.detail), '', location.pathname + location.search);
      }
    }
    if (restored && restored.detail) show(restored, null);
    if (!view.kind && input && document.activeElement !== input) input.focus();
  }

  start();
})();
