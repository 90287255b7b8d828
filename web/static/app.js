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

  const filterBar = $('filters');
  const controls = {
    after: $('f-after'), before: $('f-before'), camera: $('f-camera'), folder: $('f-folder'), type: $('f-type'),
    orientation: $('f-orientation'), sort: $('f-sort'), good: $('f-good'),
  };
  const refineInput = $('detail-refine');

  // A search, as its URL holds it: the names of GET /api/search, so the page's URL, the API's and the
  // server-rendered page (which works without JavaScript) all read the same.
  const NO_SEARCH = Object.freeze({
    q: '', similar: null, after: '', before: '', camera: '', folder: '', types: [], orientation: '', min_pixels: '',
    sort: 'relevance', min_score: '',
  });
  const SORTS = ['relevance', 'newest', 'oldest'];
  const FILTERS = ['after', 'before', 'camera', 'folder', 'orientation', 'min_pixels'];

  // What is on screen now: the kind of search, its state, and what it found.
  let view = { kind: null, state: NO_SEARCH, source: null, upload: null, uploadName: null, results: [], next: null, cutoff: null, matches: null };
  let seq = 0; // guards against answers to superseded requests
  let facetSeq = 0;
  let loadingMore = false;
  let detailIndex = -1;
  const uploads = new Map(); // upload key -> {blob, url}
  const cache = new Map(); // view key -> view (for the back button)
  const facetCache = new Map();

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

  function formatDate(iso, exif) {
    if (!iso) return '—';
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return iso;
    return date.toLocaleString(undefined, { year: 'numeric', month: 'long', day: 'numeric', hour: '2-digit', minute: '2-digit', ...(exif ? { timeZone: 'UTC' } : {}) });
  }

  function formatDay(iso, exif) {
    // EXIF records the camera's clock with no time zone (the API gives it as UTC): show it as it was.
    if (!iso) return '—';
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return iso;
    return date.toLocaleDateString(undefined, { year: 'numeric', month: 'short', day: 'numeric', ...(exif ? { timeZone: 'UTC' } : {}) });
  }

  // -- the search state and its URL ----------------------------------------------------------

  function stateFromUrl(search) {
    const params = new URLSearchParams(search);
    const last = (name) => { const all = params.getAll(name); return all.length ? all[all.length - 1].trim() : ''; };
    const similar = last('similar');
    const types = [];
    for (const value of params.getAll('type')) {
      for (const t of value.split(',')) { const k = t.trim().toLowerCase(); if (k && !types.includes(k)) types.push(k); }
    }
    const state = { ...NO_SEARCH, q: last('q').replace(/\s+/g, ' ').trim(), similar: /^\d+$/.test(similar) ? Number(similar) : null, types };
    for (const name of FILTERS) state[name] = last(name);
    state.orientation = state.orientation.toLowerCase();
    const sort = last('sort').toLowerCase();
    state.sort = SORTS.includes(sort) ? sort : 'relevance';
    state.min_score = last('min_score');
    return state;
  }

  function paramsFor(s, { forFacets = false } = {}) {
    // One order, defaults left out: the same search always has the same URL (and cache key).
    const p = new URLSearchParams();
    const cut = s.sort !== 'relevance' || s.min_score !== '';
    if (s.q && (!forFacets || cut)) p.set('q', s.q);
    if (s.similar && (!forFacets || cut)) p.set('similar', s.similar);
    for (const name of ['after', 'before', 'camera', 'folder']) if (s[name]) p.set(name, s[name]);
    for (const t of s.types) p.append('type', t);
    for (const name of ['orientation', 'min_pixels']) if (s[name]) p.set(name, s[name]);
    if (!forFacets && s.sort !== 'relevance') p.set('sort', s.sort);
    if (s.min_score !== '' && (!forFacets || cut)) p.set('min_score', s.min_score);
    return p;
  }

  const keyOf = (s) => paramsFor(s).toString();
  const kindOf = (s) => (s.similar ? 'similar' : s.q ? 'text' : null);
  const byDate = (s) => s.sort !== 'relevance';
  const filtered = (s) => FILTERS.some((name) => s[name]) || s.types.length > 0;
  const withState = (changes) => ({ ...view.state, ...changes });

  // -- notices -------------------------------------------------------------------------------

  // The API's language_hint: the query is in a script the index's encoder does not read.
  const HINT_TITLE = 'This index\u2019s encoder may not understand these words';

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

  function showNothing() {
    const s = view.state;
    let title = view.kind === 'text' ? `No photos match “${s.q}”` : 'No similar photos found';
    let text = 'Try other words, or search by a photo: drop one on the page, paste it, or pick a file.';
    if (byDate(s) && s.min_score !== '-1') {
      if (view.kind === 'text') title = `No good matches for “${s.q}”`;
      text = 'Untick “only good matches” to see every photo by date, or try other words.';
    } else if (filtered(s)) {
      title += ' with these filters';
      text = 'Try fewer filters, or other words.';
    }
    showNotice('info', title, text);
  }

  // -- rendering -----------------------------------------------------------------------------

  // Why a result matched, in words (the API's "why"); the usual "by meaning" alone goes unsaid on tiles.
  const WHY = { semantic: 'by meaning', file_name: 'file name', folder: 'folder', caption: 'caption',
    keyword: 'keyword', ocr_text: 'text in photo', tag: 'tag' };
  const whyText = (why) => (why || ['semantic']).map((w) => WHY[w] || w).join(' · ');
  function whyBadge(why) {
    if (!why || (why.length === 1 && why[0] === 'semantic')) return null;
    return el('span', { class: 'tile-why', title: 'Why it matched', text: whyText(why) });
  }

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
    similarBtn.addEventListener('click', () => searchSimilar(photo, '', true));
    // Sorted by date, each photo says when it was taken (or, with no EXIF date, that it is the file's date).
    const fileDate = photo.date_source === 'file';
    const day = byDate(view.state) && photo.date
      ? el('span', { class: `tile-date${fileDate ? ' file-date' : ''}`, title: fileDate ? 'No date in the photo: the file’s date' : 'Taken' },
        formatDay(photo.date, !fileDate), fileDate ? el('span', { class: 'file-note', text: ' · file date' }) : null)
      : null;
    // A text query's results can be marked right/wrong for the next tune (feedback.js; absent: no buttons).
    const marks = view.kind === 'text' && window.photoseekFeedback ? window.photoseekFeedback.buttons(photo.id, view.state.q) : null;
    const figure = el('figure', { class: 'tile', 'data-index': index, 'data-id': photo.id },
      link,
      el('figcaption', { class: 'tile-caption' },
        el('span', { class: 'tile-name', text: photo.name }),
        el('span', { class: 'score', text: score })),
      day,
      whyBadge(hit.why),
      similarBtn,
      marks);
    // Justified rows: each tile grows in proportion to its aspect ratio (CSSOM, allowed by the CSP).
    const ratio = Math.min(3, Math.max(0.4, (photo.width || 1) / (photo.height || 1)));
    figure.style.setProperty('--ar', ratio.toFixed(4));
    return figure;
  }

  function renderSummary() {
    summary.replaceChildren();
    const s = view.state;
    const clear = (label, onClick) => {
      const a = el('a', { class: 'chip-clear', href: ROOT + '/', 'aria-label': label, title: label, text: '×' });
      a.addEventListener('click', (event) => { event.preventDefault(); onClick(); });
      return a;
    };
    if (view.kind === 'similar' && view.source) {
      const chip = el('a', { class: 'chip', href: view.source.page_url },
        el('img', { src: view.source.thumbnail_url, alt: '' }), view.source.name);
      chip.addEventListener('click', (event) => { event.preventDefault(); openSourceDetail(); });
      // The photo is one term of the search: its × drops it (what the box says stays).
      summary.append(el('span', { class: 'summary-label', text: 'Photos like' }), chip,
        clear(s.q ? 'Search by the words alone' : 'Clear search', () => (s.q ? search(withState({ similar: null }), true) : goHome(true))));
      if (s.q) summary.append(el('span', { class: 'summary-label' }, 'and ', el('strong', { text: s.q })));
    } else if (view.kind === 'image') {
      const entry = view.upload && uploads.get(view.upload);
      const chip = el('span', { class: 'chip' },
        entry ? el('img', { src: entry.url, alt: '' }) : null, view.uploadName || 'your image');
      summary.append(el('span', { class: 'summary-label', text: 'Photos like' }), chip, clear('Clear search', () => goHome(true)));
    } else if (view.kind === 'text' && view.results.length) {
      const good = view.cutoff !== null && view.cutoff !== undefined && s.min_score !== '-1';
      const label = !byDate(s) ? 'Best matches' : good ? 'Good matches' : 'Matches';
      summary.append(el('span', { class: 'summary-label' }, `${label} for `, el('strong', { text: s.q }),
        byDate(s) ? `, ${s.sort} first` : ''));
    }
    if (view.kind && view.kind !== 'image' && byDate(s) && view.matches && view.results.length) {
      const good = view.cutoff !== null && view.cutoff !== undefined && s.min_score !== '-1';
      summary.append(el('span', { class: 'summary-count', text: `${view.matches} photo${view.matches === 1 ? '' : 's'}${good ? ` scoring ${view.cutoff.toFixed(2)} or more` : ''}` }));
    }
    summary.hidden = !summary.childElementCount;
  }

  const loadMarks = () => window.photoseekFeedback && window.photoseekFeedback.load(view.kind === 'text' ? view.state.q : null);

  function render() {
    grid.replaceChildren(...view.results.map((hit, i) => tile(hit, i)));
    loadMarks();
    renderSummary();
    renderBar();
    if (welcome) welcome.hidden = view.kind !== null;
    updateMore();
    if (view.kind && !view.results.length) showNothing();
    else if (view.hint) showNotice('info', HINT_TITLE, view.hint.message);
    input.placeholder = view.kind === 'similar' ? 'Refine: “in winter” (optional)' : 'Search your photos: “a dog on the beach”';
    document.title = view.kind === 'text' ? `${view.state.q} · photoseek`
      : view.kind === 'similar' && view.source ? `Like ${view.source.name} · photoseek` : 'photoseek';
  }

  function updateMore() {
    const canMore = view.next !== null && view.next !== undefined && (view.kind !== 'image' || uploads.has(view.upload));
    moreWrap.hidden = !canMore;
    moreBtn.href = canMore && view.kind !== 'image' ? urlFor(view) : '#';
  }

  // -- the filter bar ------------------------------------------------------------------------

  function setOptions(select, choices, current, anyLabel) {
    // Choices from /api/facets, each with how many photos it keeps; the current value stays
    // listed even when no photo has it (a bookmark's camera=canon, a folder deeper down).
    const options = [el('option', { value: '', text: anyLabel })];
    let found = !current;
    for (const c of choices) {
      const selected = c.value === current;
      found = found || selected;
      options.push(el('option', { value: c.value, title: c.title || null, selected, text: c.count === null || c.count === undefined ? c.label : `${c.label} (${c.count})` }));
    }
    if (!found) options.splice(1, 0, el('option', { value: current, selected: true, text: current }));
    select.replaceChildren(...options);
    select.value = current;
  }

  function facetChoices(facets) {
    const folders = (facets && facets.folder || []).filter((f) => f.value);
    const base = (path) => path.replace(/[/\\]+$/, '').split(/[/\\]/).pop() || path;
    const unique = new Set(folders.map((f) => base(f.value))).size === folders.length;
    return {
      camera: (facets && facets.camera || []).filter((c) => c.value),
      folder: folders.map((f) => ({ value: f.value, label: unique ? base(f.value) : f.value, title: f.value, count: f.count })),
      type: (facets && facets.type || []).filter((t) => t.value),
      year: (facets && facets.year || []).filter((y) => y.value).sort((a, b) => b.value.localeCompare(a.value)),
      orientation: (facets && facets.orientation || []).filter((o) => o.value),
    };
  }

  let shownFacets = null;
  const BAR_TAGS = 12; // as web/pages.py
  // The query syntax's tag filter: tag:golden-retriever (see search/query.py; web/pages.py toggle_tag).
  function toggleTag(q, name) {
    const token = `tag:${name.replace(/ /g, '-')}`;
    const words = q.split(/\s+/).filter(Boolean);
    if (words.some((w) => w.toLowerCase() === token)) return { q: words.filter((w) => w.toLowerCase() !== token).join(' '), on: true };
    return { q: words.concat([token]).join(' '), on: false };
  }

  function renderBar(facets) {
    if (!filterBar) return;
    if (facets !== undefined) shownFacets = facets;
    const s = view.state;
    filterBar.hidden = !(view.kind === 'text' || view.kind === 'similar' || view.kind === 'image');
    filterBar.disabled = filterBar.hidden;
    const choices = facetChoices(shownFacets);
    controls.after.value = s.after;
    controls.before.value = s.before;
    setOptions(controls.camera, choices.camera, s.camera, 'Any camera');
    setOptions(controls.folder, choices.folder, s.folder, 'Any folder');
    const typeValue = s.types.join(',');
    setOptions(controls.type, choices.type, typeValue, 'Any type');
    if (s.types.length > 1) controls.type.selectedOptions[0].textContent = s.types.map((t) => t.toUpperCase()).join(', ');
    // Shapes are a fixed list; the counts say how many photos each keeps.
    const shapes = ['landscape', 'portrait', 'square'].map((v) => {
      const found = choices.orientation.find((o) => o.value === v);
      return { value: v, label: v[0].toUpperCase() + v.slice(1), count: found ? found.count : (shownFacets ? 0 : null) };
    });
    setOptions(controls.orientation, shapes, s.orientation, 'Any shape');
    controls.sort.value = s.sort;
    controls.good.checked = s.min_score !== '-1';
    for (const [name, on] of [['after', s.after], ['before', s.before], ['camera', s.camera], ['folder', s.folder], ['type', typeValue], ['orientation', s.orientation]]) {
      controls[name].closest('.filter').classList.toggle('on', Boolean(on));
    }
    // "only good matches" is about sorting by date: sorted by relevance the best come first anyway.
    $('f-good-wrap').hidden = !byDate(s);
    // Years as shortcuts for the date range; one year alone says nothing worth the room.
    const years = choices.year.length < 2 ? [] : choices.year.map((y) => {
      const after = `${y.value}-01-01`;
      const before = `${y.value}-12-31`;
      const on = s.after === after && s.before === before;
      const next = withState(on ? { after: '', before: '' } : { after, before });
      const a = el('a', { class: `year${on ? ' on' : ''}`, href: `${ROOT}/?${keyOf(next)}`, 'aria-current': on ? 'true' : null },
        y.label, ' ', el('span', { class: 'count', text: String(y.count) }));
      a.addEventListener('click', (event) => { event.preventDefault(); applyFilters(next); });
      return a;
    });
    $('f-years').replaceChildren(...years);
    // Tags (the most common among these photos): each adds tag:NAME to the words, or takes it out.
    const tags = (shownFacets && shownFacets.tag || []).filter((t) => t.value).slice(0, BAR_TAGS).map((t) => {
      const { q, on } = toggleTag(s.q, t.value);
      const next = withState({ q });
      const a = el('a', { class: `year tag${on ? ' on' : ''}`, href: `${ROOT}/?${keyOf(next)}`, 'aria-current': on ? 'true' : null },
        t.label, ' ', el('span', { class: 'count', text: String(t.count) }));
      a.addEventListener('click', (event) => { event.preventDefault(); search(next, true); });
      return a;
    });
    $('f-tags').replaceChildren(...tags);
    const clearLink = $('f-clear');
    const cleared = withState({ after: '', before: '', camera: '', folder: '', types: [], orientation: '', min_pixels: '' });
    clearLink.hidden = !filtered(s);
    clearLink.href = `${ROOT}/?${keyOf(cleared)}`;
  }

  async function loadFacets() {
    // Counts for the bar, for this search and the other filters: fetched after the results, so
    // they never hold the results back.
    // (An upload's own matches cannot be counted by GET: its counts are of the photos the filters keep.)
    if (!filterBar || !view.kind) { renderBar(null); return; }
    const key = paramsFor(view.state, { forFacets: true }).toString();
    const mine = ++facetSeq;
    let facets = facetCache.get(key);
    if (!facets) {
      try { facets = await api(`/api/facets?${key}`); } catch (err) { return; } // the bar still works without counts
      facetCache.set(key, facets);
    }
    if (mine === facetSeq) renderBar(facets);
  }

  function applyFilters(next) {
    // A change in the bar: a new search (a new history entry), by the same words, photo or upload.
    if (view.kind === 'image' && uploads.has(view.upload)) return searchUpload(null, view.uploadName, true, next);
    return search(next, true);
  }

  function barChanged(event) {
    const c = controls;
    const changes = {};
    const name = event.target.id.replace(/^f-/, '');
    if (name === 'type') changes.types = c.type.value ? c.type.value.split(',') : [];
    else if (name === 'good') changes.min_score = c.good.checked ? '' : '-1';
    else if (name === 'sort') {
      changes.sort = c.sort.value;
      // Sorted by relevance, "all matches" is what one gets anyway: keep the URL plain.
      if (c.sort.value === 'relevance' && view.state.min_score === '-1') changes.min_score = '';
    } else changes[name] = event.target.value;
    applyFilters(withState(changes));
  }

  // A date typed with the keyboard changes with every digit of its year (0002, 0020, 0201, 2019):
  // wait for a pause, and for a four-digit year, before searching.
  let dateTimer = 0;
  function dateChanged() {
    clearTimeout(dateTimer);
    const whole = (value) => value === '' || /^[1-9]\d{3}-\d{2}-\d{2}$/.test(value);
    const after = controls.after.value;
    const before = controls.before.value;
    if (!whole(after) || !whole(before)) return;
    dateTimer = setTimeout(() => {
      if (after !== view.state.after || before !== view.state.before) applyFilters(withState({ after, before }));
    }, 450);
  }

  if (filterBar) {
    for (const [name, control] of Object.entries(controls)) {
      control.addEventListener('change', name === 'after' || name === 'before' ? dateChanged : barChanged);
    }
    $('f-clear').addEventListener('click', (event) => {
      event.preventDefault();
      applyFilters(withState({ after: '', before: '', camera: '', folder: '', types: [], orientation: '', min_pixels: '' }));
    });
  }

  // -- history -------------------------------------------------------------------------------

  function viewKey(v) {
    return v.kind === 'image' ? `image:${v.upload}:${keyOf(v.state)}` : v.kind ? keyOf(v.state) : 'home';
  }

  function urlFor(v) {
    if (v.kind === 'image' || !v.kind) return `${ROOT}/`;
    return `${ROOT}/?${keyOf(v.state)}`;
  }

  function stateFor(v, detail) {
    // Enough to show the view again after back/forward, even after a reload (the URL holds the rest).
    return { kind: v.kind, search: v.state, upload: v.upload, uploadName: v.uploadName, detail: detail ?? null };
  }

  function commit(push) {
    cache.set(viewKey(view), view);
    const state = view.kind === 'image'
      // Uploads cannot be put in a URL: keep their results in the history entry instead.
      ? { ...stateFor(view), results: view.results, next: view.next }
      : stateFor(view);
    if (push) history.pushState(state, '', urlFor(view)); else history.replaceState(state, '', urlFor(view));
  }

  // -- searches ------------------------------------------------------------------------------

  async function run(next, fetcher, push) {
    const mine = ++seq;
    setBusy(true);
    try {
      const data = await fetcher();
      if (mine !== seq) return false;
      noticeSlot.replaceChildren();
      view = {
        ...next, source: data.source || next.source || null, results: data.results, next: data.next_offset,
        cutoff: data.cutoff ?? null, matches: data.matches ?? null, hint: data.language_hint ?? null,
      };
      commit(push);
      render();
      loadFacets();
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

  function fromCache(key) {
    const cached = cache.get(key);
    if (!cached) return false;
    seq += 1;
    setBusy(false);
    view = cached;
    commit(false);
    noticeSlot.replaceChildren();
    render();
    loadFacets();
    return true;
  }

  function search(next, push) {
    // Any search the URL can hold: words, a photo, both; with filters, sort and cutoff.
    next = { ...next, q: next.q.trim().replace(/\s+/g, ' ') };
    const kind = kindOf(next);
    if (!kind) { goHome(push); return Promise.resolve(false); }
    if (next.q.length > MAX_QUERY) {
      showNotice('error', 'That query is too long', `Keep it under ${MAX_QUERY} characters.`);
      return Promise.resolve(false);
    }
    input.value = next.q;
    if (!push && fromCache(keyOf(next))) return Promise.resolve(true);
    const source = kind === 'similar' && view.source && view.source.id === next.similar ? view.source : null;
    const key = keyOf(next);
    return run({ kind, state: next, source, upload: null, uploadName: null },
      () => api(`/api/search?${key}&limit=${PAGE}`), push);
  }

  function searchSimilar(photo, words, push) {
    // "Similar" on a tile or in the detail view: photos like this one, refined by words if given;
    // the filters and the sort stay.
    closeDetailNow();
    return search(withState({ similar: photo.id, q: words || '' }), push).then((ok) => {
      if (ok && view.kind === 'similar' && !view.source) { view.source = photo; renderSummary(); }
      return ok;
    });
  }

  function searchUpload(blob, name, push, nextState) {
    closeDetailNow();
    let key = null;
    if (blob) {
      if (blob.size > MAX_UPLOAD) {
        showError(new ApiError(413, `the limit is ${humanSize(MAX_UPLOAD)} and this file is ${humanSize(blob.size)}`), 'upload');
        return Promise.resolve(false);
      }
      key = `u${Date.now().toString(36)}${Math.random().toString(36).slice(2, 7)}`;
      uploads.set(key, { blob, url: URL.createObjectURL(blob) });
    } else if (view.kind === 'image' && uploads.has(view.upload)) {
      key = view.upload; // the same upload, other filters
    } else {
      return Promise.resolve(false);
    }
    input.value = '';
    const state = { ...(nextState || view.state), q: '', similar: null };
    return run({ kind: 'image', state, upload: key, uploadName: name || 'your image' },
      () => postImage(key, state, 0), push).then((ok) => {
      if (!ok && blob) { URL.revokeObjectURL(uploads.get(key).url); uploads.delete(key); }
      return ok;
    });
  }

  async function postImage(key, s, offset) {
    // POST /api/search with the image as a term: the filters and the sort apply to uploads too.
    // The server embeds the same bytes once, however many pages are asked for.
    const entry = uploads.get(key);
    const image = await new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(String(reader.result).replace(/^data:[^,]*,/, ''));
      reader.onerror = () => reject(new ApiError(0, 'that file cannot be read'));
      reader.readAsDataURL(entry.blob);
    });
    const filters = { type: s.types };
    for (const name of ['after', 'before', 'camera', 'folder', 'orientation']) if (s[name]) filters[name] = s[name];
    if (s.min_pixels) filters.min_pixels = Number(s.min_pixels);
    const bodyJson = { terms: [{ image }], filters, sort: s.sort, limit: PAGE, offset };
    if (s.min_score !== '') bodyJson.min_score = Number(s.min_score);
    return api('/api/search', { method: 'POST', headers: { Accept: 'application/json', 'Content-Type': 'application/json' }, body: JSON.stringify(bodyJson) });
  }

  function goHome(push) {
    seq += 1;
    setBusy(false);
    closeDetailNow();
    view = { kind: null, state: NO_SEARCH, source: null, upload: null, uploadName: null, results: [], next: null, cutoff: null, matches: null };
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
    if (view.kind === 'text' || view.kind === 'similar') fetcher = () => api(`/api/search?${keyOf(current.state)}&limit=${PAGE}&offset=${offset}`);
    else if (view.kind === 'image' && uploads.has(view.upload)) fetcher = () => postImage(current.upload, current.state, offset);
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

  function fillDetail(photo, score, why) {
    detailPhoto = photo;
    $('detail-name').textContent = photo.name;
    $('detail-path').textContent = photo.path;
    $('detail-path').title = photo.path;
    // With no date in the photo itself, the file's date stands in: filters and sorting use it, so say so.
    $('detail-taken').textContent = photo.taken_at ? formatDate(photo.taken_at, true)
      : photo.date && photo.date_source === 'file' ? `${formatDate(photo.date)} (file date)` : '—';
    $('detail-camera').textContent = photo.camera || '—';
    $('detail-size').textContent = humanSize(photo.size_bytes);
    $('detail-dims').textContent = `${photo.width} × ${photo.height}`;
    $('detail-score').textContent = score === null ? '—' : score.toFixed(3);
    $('detail-why').textContent = score === null ? '—' : whyText(why);
    $('detail-original').href = photo.file_url;
    showDetailTags(photo);
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

  async function showDetailTags(photo) {
    // Search results carry no tags: the photo's own answer does (GET /api/images/{id}).
    const box = $('detail-tags');
    box.textContent = '…';
    let full;
    try { full = await api(`/api/images/${photo.id}`); } catch (err) { box.textContent = '—'; return; }
    if (detailPhoto !== photo) return;
    const chips = (full.tags || []).map((t) => el('a', {
      class: 'chip tag-chip', href: `${ROOT}/?q=${encodeURIComponent(`tag:${t.tag.replace(/ /g, '-')}`)}`,
      title: `score ${t.score.toFixed(3)}${t.via ? `, from ${t.via}` : ''}`,
    }, t.tag, ' ', el('span', { class: 'count', text: t.score.toFixed(2) })));
    if (chips.length) box.replaceChildren(...chips); else box.textContent = '—';
  }

  function openDetail(index, push) {
    const hit = view.results[index];
    if (!hit) return;
    detailIndex = index;
    fillDetail(hit.photo, hit.score, hit.why);
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
  $('detail-similar-form').addEventListener('submit', (event) => {
    // "Find similar", refined by the words next to it if any: similar=ID&q=WORDS.
    event.preventDefault();
    if (!detailPhoto) return;
    const photo = detailPhoto;
    const words = refineInput.value.trim().replace(/\s+/g, ' ');
    if (words.length > MAX_QUERY) { refineInput.focus(); return; }
    // Replace the detail entry rather than stacking the search on top of it.
    const hadEntry = history.state && history.state.detail;
    closeDetailNow();
    if (hadEntry) history.replaceState(stateFor(view), '', urlFor(view));
    searchSimilar(photo, words, true);
  });

  // -- input: typing, picking, dropping, pasting ---------------------------------------------

  form.addEventListener('submit', (event) => {
    // The box holds the words of the search; a photo searched by (its chip) stays, refined by
    // them, and so do the filters and the sort.
    event.preventDefault();
    const query = input.value.trim().replace(/\s+/g, ' ');
    const similar = view.kind === 'similar' ? view.state.similar : null;
    if (!query && !similar) { input.focus(); return; }
    const next = view.kind === 'image' || !view.kind ? { ...view.state, q: query, similar: null } : withState({ q: query, similar });
    if (view.kind && keyOf(next) === keyOf(view.state) && view.kind !== 'image' && !noticeSlot.childElementCount) return;
    search(next, true);
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
        if (new URL(uri, location.href).origin === location.origin) { searchSimilar({ id: Number(match[1]) }, '', true); return; }
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

  async function show(entry) {
    // A history entry again (back, forward): its URL says which search, its state what else.
    let ok = true;
    if (entry && entry.kind === 'image') {
      const search = entry.search || NO_SEARCH;
      if (view.upload !== entry.upload || keyOf(view.state) !== keyOf(search)) {
        seq += 1;
        setBusy(false);
        const cached = cache.get(`image:${entry.upload}:${keyOf(search)}`);
        view = cached || {
          kind: 'image', state: search, source: null, upload: entry.upload, uploadName: entry.uploadName,
          results: entry.results || [], next: uploads.has(entry.upload) ? entry.next ?? null : null, cutoff: null, matches: null,
        };
        noticeSlot.replaceChildren();
        render();
        loadFacets();
      }
    } else {
      const s = stateFromUrl(location.search);
      if (!kindOf(s)) { if (view.kind !== null) goHome(false); }
      else if (view.kind !== kindOf(s) || keyOf(s) !== keyOf(view.state)) ok = await search(s, false);
    }
    if (ok && entry && entry.detail) {
      const index = view.results.findIndex((hit) => hit.photo.id === entry.detail);
      if (index >= 0) {
        detailIndex = index;
        fillDetail(view.results[index].photo, view.results[index].score, view.results[index].why);
        if (!dialog.open) dialog.showModal();
        history.replaceState({ ...(history.state || stateFor(view)), detail: entry.detail }, '', urlFor(view));
      }
    } else if (dialog.open) {
      closeDetailNow();
    }
  }

  window.addEventListener('popstate', (event) => { show(event.state); });

  // A tune from the footer (feedback.js) changed what text queries find: cached answers are stale.
  document.addEventListener('photoseek:tuned', () => {
    cache.clear();
    if (view.kind === 'text' || view.kind === 'similar') search(view.state, false);
  });

  // -- start: take over what the server rendered ---------------------------------------------

  function start() {
    let initial = {};
    try { initial = JSON.parse($('initial-data').textContent || '{}'); } catch (err) { /* plain page */ }
    body.classList.add('js');
    const restored = history.state;
    if (restored && restored.kind === 'image' && !initial.kind) {
      // A reload or return to an upload's results: the image is gone, its results are not.
      view = {
        kind: 'image', state: restored.search || NO_SEARCH, source: null, upload: restored.upload, uploadName: restored.uploadName,
        results: restored.results || [], next: null, cutoff: null, matches: null,
      };
      render();
      loadFacets();
    } else {
      // The server answered this URL's search already (the same request as the API's): show its
      // answer, with the state read from the URL as the server read it.
      const kind = initial.kind || null;
      view = {
        kind,
        state: kind === 'text' || kind === 'similar' ? stateFromUrl(location.search) : NO_SEARCH,
        source: initial.source || null,
        upload: null,
        uploadName: initial.upload_name || null,
        results: initial.results || [],
        next: kind === 'image' ? null : initial.next_offset ?? null,
        cutoff: initial.cutoff ?? null,
        matches: initial.matches ?? null,
        hint: initial.language_hint ?? null,
      };
      if (initial.facets) facetCache.set(paramsFor(view.state, { forFacets: true }).toString(), initial.facets);
      if (!initial.error) {
        grid.replaceChildren(...view.results.map((hit, i) => tile(hit, i)));
        updateMore();
        if (kind === 'similar' || kind === 'text') renderSummary();
      } else {
        grid.replaceChildren();
      }
      renderBar(initial.facets || null);
      loadMarks();
      if (kind === 'image') {
        history.replaceState({ ...stateFor(view), results: view.results, next: null }, '', urlFor(view));
      } else if (kind && !initial.error) {
        cache.set(viewKey(view), view);
        // One spelling per search (a plain form's empty fields and paging left out).
        history.replaceState(stateFor(view, restored && restored.detail), '', urlFor(view));
      }
    }
    if (restored && restored.detail) show(restored);
    if (!view.kind && input && document.activeElement !== input) input.focus();
  }

  start();
})();
