// photoseek search page: "right"/"wrong" marks on the results of a text query, and "Tune with N marks"
// (issue 13). Loaded before app.js, which calls window.photoseekFeedback.buttons() for each tile of a
// text query and .load(q) when a search is shown. Without JavaScript none of this exists (the page
// works as before); on a read-only index the server says so and nothing is shown.
(() => {
  'use strict';

  const ROOT = document.body.dataset.root || '';
  let query = null; // the text query the marks on screen are for
  let marks = new Map(); // photo id -> 'right' | 'wrong'
  let writable = false;
  let total = 0;
  let loadSeq = 0;

  async function call(path, options = {}) {
    let response;
    try {
      response = await fetch(ROOT + path, {
        credentials: 'same-origin', ...options,
        headers: { Accept: 'application/json', ...(options.body ? { 'Content-Type': 'application/json' } : {}) },
      });
    } catch (err) {
      throw new Error('the server cannot be reached; is photoseek serve still running?');
    }
    let data = null;
    try { data = await response.json(); } catch (err) { /* not JSON */ }
    if (!response.ok) throw new Error((data && data.message) || `the server answered ${response.status}`);
    return data;
  }

  function show(group) {
    // A tile's two buttons, as the stored mark says.
    const id = Number(group.dataset.id);
    const current = group.dataset.query === query ? marks.get(id) : undefined;
    group.hidden = !writable;
    for (const button of group.querySelectorAll('button')) {
      const on = button.dataset.mark === current;
      button.setAttribute('aria-pressed', on ? 'true' : 'false');
      button.classList.toggle('on', on);
    }
  }

  function showAll() {
    document.querySelectorAll('#grid .tile-marks').forEach(show);
    tuneControl();
  }

  function buttons(id, q) {
    const group = document.createElement('span');
    group.className = 'tile-marks';
    group.dataset.id = String(id);
    group.dataset.query = q;
    group.setAttribute('role', 'group');
    group.setAttribute('aria-label', 'Is this a good result?');
    for (const [mark, label, title] of [['right', 'Right', 'A right result for this query: tuning learns it'],
      ['wrong', 'Wrong', 'A wrong result for this query: tuning learns to rank it lower']]) {
      const button = document.createElement('button');
      button.type = 'button';
      button.className = `mark mark-${mark}`;
      button.dataset.mark = mark;
      button.textContent = label;
      button.title = title;
      button.addEventListener('click', (event) => { event.stopPropagation(); toggle(group, mark); });
      group.append(button);
    }
    show(group);
    return group;
  }

  async function toggle(group, mark) {
    const id = Number(group.dataset.id);
    const q = group.dataset.query;
    const wanted = q === query && marks.get(id) === mark ? 'none' : mark;
    group.classList.add('saving');
    try {
      const data = await call('/api/feedback', { method: 'POST', body: JSON.stringify({ query: q, image_id: id, mark: wanted }) });
      if (q === query) {
        if (data.mark) marks.set(id, data.mark.mark); else marks.delete(id);
      }
      total = data.total;
      show(group);
      tuneControl();
    } catch (err) {
      outcome(err.message, true);
    } finally {
      group.classList.remove('saving');
    }
  }

  async function load(q) {
    // The marks of the query on screen (and whether marks can be kept here at all).
    const mine = ++loadSeq;
    query = q || null;
    marks = new Map();
    try {
      const data = await call(`/api/feedback${query ? `?query=${encodeURIComponent(query)}` : ''}`);
      if (mine !== loadSeq) return;
      writable = data.writable;
      total = data.total;
      if (query) for (const m of data.marks) marks.set(m.image_id, m.mark);
    } catch (err) {
      if (mine !== loadSeq) return;
      writable = false; // no index yet, or another problem: no buttons
    }
    showAll();
  }

  // -- "Tune with N marks", in the footer ----------------------------------------------------

  let control = null;
  let tuneButton = null;
  let result = null;

  function tuneControl() {
    if (!control) {
      const footer = document.getElementById('index-status');
      if (!footer) return;
      control = document.createElement('span');
      control.id = 'tune-control';
      tuneButton = document.createElement('button');
      tuneButton.type = 'button';
      tuneButton.className = 'linklike';
      tuneButton.id = 'tune';
      tuneButton.title = 'photoseek tune: learn your captions and marks, so that text queries use them';
      tuneButton.addEventListener('click', tune);
      result = document.createElement('span');
      result.id = 'tune-outcome';
      result.setAttribute('role', 'status');
      control.append(' · ', tuneButton, ' ', result);
      footer.append(control);
    }
    control.hidden = !writable || (total === 0 && !result.textContent);
    if (!tuneButton.disabled) tuneButton.textContent = `Tune with ${total} mark${total === 1 ? '' : 's'}`;
  }

  function outcome(text, failed) {
    tuneControl();
    if (!result) return;
    result.textContent = text;
    result.classList.toggle('failed', !!failed);
    control.hidden = false;
  }

  async function tune() {
    tuneButton.disabled = true;
    tuneButton.textContent = 'Tuning…';
    result.textContent = '';
    try {
      const data = await call('/api/tune', { method: 'POST', body: '{}' });
      outcome(data.message, false);
      document.dispatchEvent(new CustomEvent('photoseek:tuned', { detail: data }));
    } catch (err) {
      outcome(err.message, true);
    } finally {
      tuneButton.disabled = false;
      tuneControl();
    }
  }

  window.photoseekFeedback = { buttons, load };
})();
