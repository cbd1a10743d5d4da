// Charter's operator console: a small script over the JSON API.
//
// Rules this file keeps (SECURITY.md promise 18): every value from the API
// reaches the page as text (DOM nodes, textContent), never as HTML (the
// page's policy makes the browser refuse HTML from strings anyway); the
// token lives in this tab's sessionStorage and travels only in the
// Authorization header, never in a URL; the page offers an action only to
// a user whose roles allow it, and the API checks it again regardless.
'use strict';

const KEY = 'charter.token';
const state = { me: null, approvers: [], lastSeq: null, live: null, refreshing: false, again: false };

// ---- DOM helpers (text only) ---------------------------------------------

function h(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid === null || kid === undefined || kid === false) continue;
    e.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return e;
}
const $ = (sel) => document.querySelector(sel);
const app = () => $('#app');
function show(...kids) { app().replaceChildren(...kids); }
function empty(text) { return h('p', { class: 'empty' }, text); }
function time(ms) {
  if (!ms) return '—';
  return new Date(ms).toISOString().replace('T', ' ').slice(0, 19) + 'Z';
}
function dur(ms) {
  if (ms === null || ms === undefined) return '—';
  if (ms < 1000) return `${ms} ms`;
  const s = Math.round(ms / 1000);
  if (s < 120) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 120) return `${m} min`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}
function json(v) { return JSON.stringify(v, null, 2); }
function pct(x) { return x === null || x === undefined ? '—' : `${(x * 100).toFixed(1)} %`; }
function link(hash, text) { return h('a', { href: '#' + hash }, text); }
function runLink(id) { return id ? link('/runs/' + encodeURIComponent(id), id) : '—'; }
function table(head, rows, emptyText) {
  if (!rows.length) return empty(emptyText);
  return h('div', { class: 'tablewrap' }, h('table', {},
    h('thead', {}, h('tr', {}, head.map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', {}, rows.map((r) => h('tr', {}, r.map((c) => h('td', {}, c)))))));
}
function kv(pairs) {
  return h('dl', { class: 'kv' }, pairs.filter((p) => p).map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

// ---- the API -----------------------------------------------------------------

function token() { return sessionStorage.getItem(KEY); }

async function api(method, path, body) {
  const headers = { Authorization: 'Bearer ' + token() };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let r;
  try {
    r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: 'no-store', credentials: 'omit' });
  } catch (e) {
    return { ok: false, status: 0, error: { message: 'the host does not answer: ' + e.message } };
  }
  let doc = null;
  try { doc = await r.json(); } catch (_) { doc = null; }
  if (r.status === 401 && path !== '/v1/whoami') {
    signOut('Your token was refused (expired or removed); sign in again.');
  }
  if (r.ok) return { ok: true, status: r.status, doc };
  const error = (doc && doc.error) || { message: `HTTP ${r.status}` };
  return { ok: false, status: r.status, error };
}

function errorText(e) {
  const rule = e.refusal && e.refusal.rule ? ` [${e.refusal.rule}]` : '';
  return (e.message || 'failed') + rule;
}

// ---- sign in -------------------------------------------------------------------

function signInPage(message) {
  $('#top').hidden = true;
  const input = h('input', { id: 'token', type: 'password', autocomplete: 'off', spellcheck: 'false', required: true, 'aria-describedby': 'signin-msg' });
  const msg = h('p', { id: 'signin-msg', class: message ? 'message error' : 'message', role: 'alert' }, message || '');
  const form = h('form', { onsubmit: async (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(KEY, input.value.trim());
    input.value = '';
    const r = await api('GET', '/v1/whoami');
    if (!r.ok) {
      sessionStorage.removeItem(KEY);
      msg.className = 'message error';
      msg.textContent = errorText(r.error);
      return;
    }
    await start(r.doc);
  } },
  h('label', { for: 'token' }, 'Token (from ', h('code', {}, 'charter tokens create NAME'), ', or an OIDC ID token)'),
  input,
  h('button', { id: 'signin', type: 'submit' }, 'Sign in'),
  msg);
  show(h('section', { class: 'signin card' }, h('h1', {}, 'Sign in to Charter'), form,
    h('p', { class: 'muted' }, 'The token stays in this tab only and is sent to this host alone, in a header.')));
  input.focus();
}

function signOut(message) {
  sessionStorage.removeItem(KEY);
  state.me = null;
  if (state.live) state.live.abort();
  state.live = null;
  signInPage(message);
}

async function start(me) {
  state.me = me;
  // Who may decide is shown to those who decide or operate (the API
  // refuses, and records, anyone else).
  state.seesApprovers = me.approver || me.roles.includes('operator');
  const a = state.seesApprovers ? await api('GET', '/v1/approvers') : { ok: false };
  state.approvers = a.ok ? a.doc.approvers : [];
  $('#top').hidden = false;
  $('#deployment').textContent = me.deployment;
  $('#me').textContent = `${me.identity} (${me.kind}${me.roles.length ? ': ' + me.roles.join(', ') : ''})`;
  live();
  route();
}

// What the signed-in user may decide: a declared person holding `role`.
function isPerson() { return !!state.me.approver; }
function holds(role) { return isPerson() && (!role || state.me.roles.includes(role)); }

// ---- live updates (SSE over fetch: the token stays in a header) ----------------

function setLive(on) {
  const l = $('#live');
  l.className = on ? 'live on' : 'live off';
  l.textContent = on ? 'live' : 'reconnecting';
}

async function live() {
  if (state.live) state.live.abort();
  const ctl = new AbortController();
  state.live = ctl;
  while (!ctl.signal.aborted && token()) {
    try {
      const r = await fetch('/v1/events', { headers: { Authorization: 'Bearer ' + token() }, signal: ctl.signal, cache: 'no-store', credentials: 'omit' });
      if (r.status === 401) { signOut('Your token was refused (expired or removed); sign in again.'); return; }
      if (!r.ok || !r.body) throw new Error('HTTP ' + r.status);
      setLive(true);
      const reader = r.body.getReader();
      const dec = new TextDecoder();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          onEvent(buf.slice(0, i));
          buf = buf.slice(i + 2);
        }
        if (buf.length > 65536) buf = '';
      }
    } catch (e) {
      if (ctl.signal.aborted) return;
    }
    setLive(false);
    await new Promise((res) => setTimeout(res, 1000));
  }
}

function onEvent(chunk) {
  let name = 'message';
  let data = '';
  for (const line of chunk.split('\n')) {
    if (line.startsWith('event:')) name = line.slice(6).trim();
    else if (line.startsWith('data:')) data += line.slice(5).trim();
  }
  if (name !== 'log') return;
  let seq;
  try { seq = JSON.parse(data).seq; } catch (_) { return; }
  if (seq === state.lastSeq) return;
  const first = state.lastSeq === null;
  state.lastSeq = seq;
  if (!first) refresh();
}

// Re-read what the current page shows (one refresh at a time; a change
// during one asks for one more).
async function refresh() {
  const page = current().page;
  if (!['inbox', 'runs', 'run'].includes(page)) return;
  if (state.refreshing) { state.again = true; return; }
  state.refreshing = true;
  try {
    do { state.again = false; await pages[page].update(current().arg, true); } while (state.again);
  } finally { state.refreshing = false; }
}

// ---- routing -------------------------------------------------------------------

function current() {
  const parts = location.hash.replace(/^#\/?/, '').split('/');
  const page = parts[0] || 'inbox';
  const arg = parts.length > 1 ? decodeURIComponent(parts.slice(1).join('/')) : null;
  if (page === 'runs' && arg) return { page: 'run', arg, nav: 'runs' };
  if (page === 'grants' && arg) return { page: 'grants', arg, nav: 'grants' };
  return { page: pages[page] ? page : 'inbox', arg, nav: page };
}

async function route() {
  if (!state.me) return;
  const c = current();
  for (const a of document.querySelectorAll('header nav a')) {
    if (a.getAttribute('href') === '#/' + c.nav) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  await pages[c.page].render(c.arg);
}

// ---- inbox ---------------------------------------------------------------------

function proposalCard(p) {
  const given = p.approvals.length;
  const deciders = state.approvers
    .filter((a) => (!p.approver_role || a.roles.includes(p.approver_role)) && a.name !== p.initiator && a.name !== p.owner && !p.approvals.includes(a.name))
    .map((a) => a.name);
  const left = p.expires_at_ms - Date.now();
  const args = p.args && typeof p.args === 'object' && !Array.isArray(p.args)
    ? kv(Object.entries(p.args).map(([k, v]) => [k, readable(k, v)]))
    : h('pre', {}, json(p.args));
  const msg = h('p', { class: 'message', role: 'alert' });
  let actions;
  if (holds(p.approver_role)) {
    const comment = h('textarea', { rows: 2, class: 'comment', 'aria-label': `Comment on ${p.id}` });
    const decide = (approve) => async () => {
      msg.className = 'message';
      msg.textContent = approve ? 'approving…' : 'rejecting…';
      const r = await api('POST', `/v1/proposals/${encodeURIComponent(p.id)}/${approve ? 'approve' : 'reject'}`, { comment: comment.value || null });
      if (r.ok) {
        msg.className = 'message ok';
        msg.textContent = `${approve ? 'Approved' : 'Rejected'}: ${(r.doc.decision && r.doc.decision.outcome) || 'recorded'}`;
        refresh();
      } else {
        msg.className = 'message error';
        msg.textContent = 'Refused: ' + errorText(r.error);
      }
    };
    actions = h('div', { class: 'actions' },
      h('label', {}, 'Comment', comment),
      h('button', { type: 'button', class: 'approve', onclick: decide(true) }, 'Approve'),
      h('button', { type: 'button', class: 'reject danger', onclick: decide(false) }, 'Reject'));
  } else {
    actions = h('p', { class: 'muted noaction' }, `You may not decide this proposal: it needs a person holding the role ${p.approver_role || '(any)'}.`);
  }
  return h('article', { class: 'card proposal', 'data-id': p.id },
    h('div', { class: 'cardhead' }, h('span', { class: 'id' }, p.id), h('strong', { class: 'plugin' }, p.plugin), h('span', { class: 'function' }, p.function),
      h('span', { class: 'badge' }, `${given} of ${p.approvals_needed} approvals`)),
    h('div', { class: 'args' }, args),
    p.rationale ? h('blockquote', { class: 'rationale' }, p.rationale) : h('p', { class: 'muted' }, 'No rationale given.'),
    kv([
      ['routed by', p.policies.join(', ') || '—'],
      ['role', p.approver_role || '—'],
      ['approved by', p.approvals.join(', ') || 'nobody yet'],
      ['who may decide', state.seesApprovers ? deciders.join(', ') || 'nobody declared' : `a person holding ${p.approver_role || 'any role'}`],
      ['started by', p.initiator || '—'],
      ['plugin owner', p.owner || '—'],
      ['run', runLink(p.run)],
      ['created', time(p.created_ms)],
      ['expires', left > 0 ? `in ${dur(left)} (${time(p.expires_at_ms)})` : 'expired'],
    ]),
    actions, msg);
}

// Amounts and identifiers, readable: `amount_cents: 20000` also as 200.00.
function readable(key, v) {
  if (typeof v === 'number' && /[_-]cents$/.test(key)) return `${v} (${(v / 100).toFixed(2)})`;
  if (typeof v === 'string') return v;
  return json(v);
}

function escalationCard(e) {
  const msg = h('p', { class: 'message', role: 'alert' });
  let actions;
  if (holds(e.role)) {
    const comment = h('textarea', { rows: 2, 'aria-label': `Comment on ${e.id}` });
    const output = h('textarea', { rows: 2, class: 'output', placeholder: '{"…": …}', 'aria-label': `Output standing for step ${e.step} (skip)` });
    const act = (action) => async () => {
      const body = { action, comment: comment.value || null };
      if (action === 'skip') {
        try { body.output = JSON.parse(output.value); } catch (err) {
          msg.className = 'message error';
          msg.textContent = 'Skip needs the output the step stands for, as JSON: ' + err.message;
          return;
        }
      }
      const r = await api('POST', `/v1/escalations/${encodeURIComponent(e.id)}/resolve`, body);
      if (r.ok) { msg.className = 'message ok'; msg.textContent = `Resolved (${action}): run is ${r.doc.status}`; refresh(); } else { msg.className = 'message error'; msg.textContent = 'Refused: ' + errorText(r.error); }
    };
    actions = h('div', { class: 'actions' },
      h('label', {}, 'Comment', comment),
      h('label', {}, 'Output (skip)', output),
      h('button', { type: 'button', class: 'retry', onclick: act('retry') }, 'Retry'),
      h('button', { type: 'button', class: 'skip secondary', onclick: act('skip') }, 'Skip'),
      h('button', { type: 'button', class: 'fail danger', onclick: act('fail') }, 'Fail'));
  } else {
    actions = h('p', { class: 'muted noaction' }, `You may not resolve this escalation: it needs a person holding the role ${e.role}.`);
  }
  return h('article', { class: 'card escalation', 'data-id': e.id },
    h('div', { class: 'cardhead' }, h('span', { class: 'id' }, e.id), h('strong', {}, 'step ', e.step)),
    h('blockquote', { class: 'rationale' }, e.reason),
    kv([['run', runLink(e.run)], ['role', e.role], ['raised', time(e.created_ms)]]),
    actions, msg);
}

// Keep a card whose proposal or escalation has not changed (a comment
// being typed survives a live update); newest first.
function keyed(list, items, make) {
  const keep = new Map();
  for (const el of list.children) if (el.dataset.id) keep.set(el.dataset.id, el);
  const out = items.map((it) => {
    const sig = JSON.stringify(it);
    const old = keep.get(it.id);
    if (old && old.dataset.sig === sig) return old;
    const el = make(it);
    el.dataset.sig = sig;
    return el;
  });
  list.replaceChildren(...out);
}

const pages = {};
pages.inbox = {
  async render() {
    const props = h('div', { id: 'proposals', 'aria-live': 'polite' });
    const escs = h('div', { id: 'escalations', 'aria-live': 'polite' });
    show(h('h1', {}, 'Inbox'), h('div', { class: 'cols' },
      h('section', {}, h('h2', {}, 'Pending proposals'), props),
      h('section', {}, h('h2', {}, 'Open escalations'), escs)));
    await this.update();
  },
  async update() {
    const props = $('#proposals');
    const escs = $('#escalations');
    if (!props) return;
    const [p, e] = await Promise.all([api('GET', '/v1/proposals'), api('GET', '/v1/escalations')]);
    if (p.ok) {
      const list = p.doc.proposals.filter((x) => x.status === 'pending').sort((a, b) => b.created_ms - a.created_ms);
      keyed(props, list, proposalCard);
      if (!list.length) props.replaceChildren(empty('No proposal waits for a decision.'));
    } else props.replaceChildren(h('p', { class: 'message error' }, errorText(p.error)));
    if (e.ok) {
      const list = e.doc.escalations.filter((x) => x.status === 'open').sort((a, b) => b.created_ms - a.created_ms);
      keyed(escs, list, escalationCard);
      if (!list.length) escs.replaceChildren(empty('No escalation is open.'));
    } else escs.replaceChildren(h('p', { class: 'message error' }, errorText(e.error)));
  },
};

// ---- runs ----------------------------------------------------------------------

const STATUSES = ['', 'running', 'retry-wait', 'waiting-approval', 'escalated', 'completed', 'failed', 'cancelled'];
const WHEN = '2026-11-30 or 2026-11-30T14:05Z (UTC)';

// A labelled text input of a filter form.
function field(id, label, value, attrs) {
  const input = h('input', Object.assign({ id, name: id, value, autocomplete: 'off' }, attrs || {}));
  return [h('label', { for: id }, label, input), input];
}

// The filter's non-empty values as a query string ('' when none).
function query(filter) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(filter)) if (v) q.set(k, v);
  const s = q.toString();
  return s ? '?' + s : '';
}

pages.runs = {
  filter: { workflow: '', status: '', initiator: '', from: '', to: '' },
  async render() {
    const f = this.filter;
    const [wfl, wf] = field('f-workflow', 'Workflow', f.workflow);
    const st = h('select', { id: 'f-status', name: 'f-status' }, STATUSES.map((s) => h('option', { value: s, selected: s === f.status }, s || 'any')));
    const [byl, by] = field('f-initiator', 'Initiator', f.initiator);
    const [froml, from] = field('f-from', 'Started from', f.from, { placeholder: WHEN, size: 18 });
    const [tol, to] = field('f-to', 'Started to', f.to, { placeholder: WHEN, size: 18 });
    const form = h('form', { class: 'filters', 'aria-label': 'Filter runs', onsubmit: (ev) => {
      ev.preventDefault();
      this.filter = { workflow: wf.value.trim(), status: st.value, initiator: by.value.trim(), from: from.value.trim(), to: to.value.trim() };
      this.update();
    } },
    wfl, h('label', { for: 'f-status' }, 'Status', st), byl, froml, tol,
    h('button', { type: 'submit', id: 'f-apply' }, 'Filter'));
    show(h('h1', {}, 'Runs'), form, h('div', { id: 'runs', 'aria-live': 'polite' }));
    await this.update();
  },
  async update() {
    const out = $('#runs');
    if (!out) return;
    // Every filter is applied by the API (a bad value is refused there,
    // naming the parameter).
    const r = await api('GET', '/v1/runs' + query(this.filter));
    if (!r.ok) { out.replaceChildren(h('p', { class: 'message error', id: 'runs-error', role: 'alert' }, errorText(r.error))); return; }
    const runs = r.doc.runs;
    out.replaceChildren(h('p', { class: 'muted', id: 'runs-count' }, `${runs.length} runs`),
      table(['run', 'workflow', 'status', 'initiator', 'started', 'took', 'waits on'],
        runs.map((x) => [runLink(x.id), x.workflow, h('span', { class: 'badge status' }, x.status), x.initiator || '—', time(x.started_ms),
          x.finished_ms ? dur(x.finished_ms - x.started_ms) : '—', x.proposal || x.escalation || (x.retry_at_ms ? 'retry at ' + time(x.retry_at_ms) : '—')]),
        'No run matches.'));
  },
};

// One attempt's host calls: function, decision, replayed or executed,
// result and duration when recorded.
function journalList(j) {
  if (!j || !j.calls.length) return h('span', { class: 'muted' }, 'no host call');
  return h('ol', { class: 'journal' }, j.calls.map((c) => h('li', { class: c.replayed ? 'call replayed' : 'call executed', 'data-function': c.function, 'data-decision': c.decision },
    h('span', { class: 'id' }, c.function), ' ',
    h('span', { class: c.decision === 'deny' ? 'badge bad' : c.decision === 'propose' ? 'badge warn' : 'badge ok' }, c.decision), ' ',
    h('span', { class: 'badge how' }, c.replayed ? 'replayed' : c.decision === 'allow' ? 'executed' : c.decision === 'propose' ? 'routed to people' : 'not executed'),
    c.ok === false ? [' ', h('span', { class: 'badge bad' }, 'failed')] : null,
    c.duration_us !== null && c.duration_us !== undefined ? ` ${c.duration_us < 1000 ? c.duration_us + ' µs' : dur(Math.round(c.duration_us / 1000))}` : '',
    c.proposal ? [' on ', link('/inbox', c.proposal)] : null)));
}

pages.run = {
  async render(id) {
    show(h('h1', {}, 'Run ', h('span', { class: 'id' }, id)), h('div', { id: 'run' }));
    await this.update(id);
  },
  async update(id) {
    const out = $('#run');
    if (!out) return;
    const r = await api('GET', '/v1/runs/' + encodeURIComponent(id));
    if (!r.ok) { out.replaceChildren(h('p', { class: 'message error' }, errorText(r.error))); return; }
    const x = r.doc;
    const waits = x.proposal && x.status === 'waiting-approval' ? ['waits on proposal', link('/inbox', x.proposal)]
      : x.escalation && x.status === 'escalated' ? ['waits on escalation', link('/inbox', x.escalation)]
        : x.retry_at_ms ? ['next retry', time(x.retry_at_ms)] : null;
    // The journal lists the attempts in the order of the history.
    const journal = x.journal || [];
    const calls = (a, i) => journalList(journal[i] && journal[i].step === a.step && journal[i].attempt === a.attempt ? journal[i] : null);
    out.replaceChildren(
      kv([['status', h('span', { class: 'badge status', id: 'run-status' }, x.status)], ['workflow', x.workflow], ['initiator', x.initiator || '—'],
        ['started', time(x.started_ms)], ['finished', time(x.finished_ms)], ['took', x.finished_ms ? dur(x.finished_ms - x.started_ms) : '—'],
        ['step', x.cursor || '—'], waits, ['retries', String(x.retries)], ['escalations', String(x.escalations)],
        x.error ? ['error', x.error] : null, x.next ? ['next', x.next] : null]),
      h('h2', {}, 'Timeline'),
      table(['step', 'attempt', 'outcome', 'failure', 'error', 'host calls (journal)', 'took', 'ended'],
        x.history.map((a, i) => [a.step, String(a.attempt), a.outcome, a.failure || '—', a.error || '—', calls(a, i), dur(Math.round(a.duration_us / 1000)), time(a.time_ms)]),
        'No attempt yet.'),
      h('h2', {}, 'Decisions'),
      table(['on', 'by', 'action', 'accepted', 'comment / reason'],
        (x.decisions || []).map((d) => [d.proposal || d.escalation || '—', d.by, d.action,
          d.accepted ? 'yes' : h('span', { class: 'badge bad' }, 'refused'), d.comment || d.reason || '—']),
        'No decision recorded.'),
      h('h2', {}, 'Input'), h('pre', { class: 'input' }, json(x.input)),
      h('h2', {}, 'Output'), h('pre', { class: 'output' }, x.output === undefined ? '(none yet)' : json(x.output)));
  },
};

// ---- audit ---------------------------------------------------------------------

const TYPES = ['', 'config-loaded', 'grant', 'check-failed', 'plugin-loaded', 'call', 'call-result', 'kv-write', 'step', 'proposal',
  'approval-decision', 'proposal-resolved', 'run-started', 'step-attempt', 'escalated', 'escalation-resolved', 'run-finished',
  'auth-refused', 'auth-refusals-suppressed', 'hook-refused', 'checkpoint'];

// Fetch `path` with the token and hand the answer to the browser as a
// file (the name the host gives in Content-Disposition).
async function download(path, fallback, msg) {
  msg.className = 'message';
  msg.textContent = 'downloading…';
  let r;
  try {
    r = await fetch(path, { headers: { Authorization: 'Bearer ' + token() }, cache: 'no-store', credentials: 'omit' });
  } catch (e) { msg.className = 'message error'; msg.textContent = 'the host does not answer: ' + e.message; return; }
  if (!r.ok) {
    let e = { message: 'HTTP ' + r.status };
    try { e = (await r.json()).error || e; } catch (_) { /* not JSON */ }
    msg.className = 'message error';
    msg.textContent = 'Refused: ' + errorText(e);
    return;
  }
  const m = /filename="([A-Za-z0-9._-]+)"/.exec(r.headers.get('Content-Disposition') || '');
  const name = m ? m[1] : fallback;
  const blob = await r.blob();
  const a = h('a', { href: URL.createObjectURL(blob), download: name });
  document.body.append(a);
  a.click();
  a.remove();
  msg.className = 'message ok';
  msg.textContent = `Downloaded ${name} (${blob.size} bytes).`;
}

pages.audit = {
  filter: { plugin: '', type: '', proposal: '', since: '', from: '', to: '', limit: '200' },
  events: [],
  async render() {
    const f = this.filter;
    const [pluginl, plugin] = field('a-plugin', 'Plugin', f.plugin);
    const type = h('select', { id: 'a-type', name: 'a-type' }, TYPES.map((t) => h('option', { value: t, selected: t === f.type }, t || 'any')));
    const [proposall, proposal] = field('a-proposal', 'Proposal', f.proposal);
    const [sincel, since] = field('a-since', 'Since', f.since, { placeholder: '30m, 2h, 7d', size: 8 });
    const [froml, from] = field('a-from', 'From', f.from, { placeholder: WHEN, size: 18 });
    const [tol, to] = field('a-to', 'To', f.to, { placeholder: WHEN, size: 18 });
    const [limitl, limit] = field('a-limit', 'Limit', f.limit, { size: 5, inputmode: 'numeric' });
    const msg = h('p', { class: 'message', id: 'a-download-msg', role: 'status' });
    const form = h('form', { class: 'filters', 'aria-label': 'Filter the audit log', onsubmit: (ev) => {
      ev.preventDefault();
      this.filter = { plugin: plugin.value.trim(), type: type.value, proposal: proposal.value.trim(), since: since.value.trim(),
        from: from.value.trim(), to: to.value.trim(), limit: limit.value.trim() };
      this.update();
    } },
    pluginl, h('label', { for: 'a-type' }, 'Type', type), proposall, sincel, froml, tol, limitl,
    h('button', { type: 'submit', id: 'a-apply' }, 'Filter'),
    h('button', { type: 'button', class: 'secondary', id: 'a-export', onclick: () => this.exportShown() }, 'Export shown (JSON lines)'));
    const downloads = h('div', { class: 'actions' },
      h('button', { type: 'button', class: 'secondary', id: 'a-export-all', onclick: () => download('/v1/audit/export', 'charter-audit.jsonl', msg) }, 'Download the whole log'),
      h('button', { type: 'button', class: 'secondary', id: 'a-checkpoint', onclick: () => download('/v1/audit/checkpoint', 'charter-checkpoint.json', msg) }, 'Download a signed checkpoint'));
    show(h('h1', {}, 'Audit'), h('div', { id: 'verify', class: 'card' }, 'Verifying the chain…'), downloads, msg, form, h('div', { id: 'audit' }));
    this.verify();
    await this.update();
  },
  async verify() {
    const r = await api('GET', '/v1/audit/verify');
    const out = $('#verify');
    if (!out) return;
    if (!r.ok) { out.replaceChildren(h('span', { class: 'badge bad' }, 'not verified'), ' ', errorText(r.error)); return; }
    const v = r.doc;
    // (replaceChildren would show a null as the text "null": none given.)
    out.replaceChildren(...[h('span', { class: v.ok ? 'badge ok' : 'badge bad', id: 'chain' }, v.ok ? 'chain intact' : 'chain BROKEN'),
      ` ${v.entries} entries, last #${v.last_seq} `, h('span', { class: 'id' }, (v.last_hash || '').slice(0, 16)),
      v.problems.length ? h('ul', {}, v.problems.map((p) => h('li', {}, p))) : null,
      v.torn_tail ? h('p', { class: 'muted' }, 'torn tail: ' + json(v.torn_tail)) : null].filter((x) => x !== null));
  },
  async update() {
    const out = $('#audit');
    if (!out) return;
    const r = await api('GET', '/v1/audit' + query(this.filter));
    if (!r.ok) { out.replaceChildren(h('p', { class: 'message error', id: 'audit-error', role: 'alert' }, errorText(r.error))); return; }
    this.events = r.doc.events;
    out.replaceChildren(h('p', { class: 'muted', id: 'audit-count' }, `${this.events.length} events`),
      table(['#', 'time', 'type', 'plugin', 'details'],
        this.events.slice().reverse().map((e) => {
          const { seq, time_ms: t, type, plugin, end, ...rest } = e;
          void end;
          const text = JSON.stringify(rest);
          return [String(seq), time(t), h('span', { class: 'type' }, type), plugin || '—', h('span', { class: 'details' }, text.length > 400 ? text.slice(0, 400) + '…' : text)];
        }), 'No event matches.'));
  },
  exportShown() {
    const lines = this.events.map((e) => JSON.stringify(e)).join('\n') + '\n';
    const a = h('a', { href: URL.createObjectURL(new Blob([lines], { type: 'application/x-ndjson' })), download: 'charter-audit.jsonl' });
    document.body.append(a);
    a.click();
    a.remove();
  },
};

// ---- grants --------------------------------------------------------------------

pages.grants = {
  async render(name) {
    show(h('h1', {}, name ? ['Grants of ', h('span', { class: 'id' }, name)] : 'Grants'), h('div', { id: 'grants' }));
    const out = $('#grants');
    const r = await api('GET', '/v1/grants');
    if (!r.ok) { out.replaceChildren(h('p', { class: 'message error' }, errorText(r.error))); return; }
    const g = r.doc;
    if (name) {
      const p = g.plugins.find((x) => x.name === name);
      if (!p) { out.replaceChildren(empty('No plugin of that name is deployed.')); return; }
      out.replaceChildren(h('section', { class: 'card plugin-grants', 'data-plugin': p.name },
        kv([['digest', p.digest], ['pinned', p.pinned ? 'yes' : 'no'], ['owner', p.owner || '—'], ['granted by', p.granted_by || '—'],
          ['why', p.reason || '—'], ['groups', p.groups.join(', ') || '—'], ['WASI', p.wasi], ['path', p.path]]),
        h('h2', {}, 'Functions it can call'),
        table(['function', 'effect', 'group'], p.functions.map((f) => [f.function,
          f.effect === 'write' ? h('span', { class: 'badge write' }, 'WRITE') : h('span', { class: 'badge' }, f.effect), f.group]), 'No capability granted.'),
        h('h2', {}, 'Hosts, secrets and channels'),
        kv([['HTTP hosts', p.allow_hosts.join(', ') || 'none'], ['secrets', p.secrets.join(', ') || 'none'], ['channels', p.channels.join(', ') || 'none']]),
        h('h2', {}, 'Versions'),
        h('div', { id: 'versions' })));
      await versions(p.name);
      return;
    }
    out.replaceChildren(
      h('p', { class: 'muted' }, `Deployment ${g.deployment}, phase ${g.phase}.`),
      table(['plugin', 'owner', 'granted by', 'groups', 'writes', 'digest'], g.plugins.map((p) => [
        link('/grants/' + encodeURIComponent(p.name), p.name), p.owner || '—', p.granted_by || '—', p.groups.join(', '),
        p.functions.some((f) => f.effect === 'write') ? h('span', { class: 'badge write' }, 'WRITE') : 'read only', h('span', { class: 'id' }, p.digest.slice(0, 23))]),
      'No plugin is deployed.'),
      h('h2', {}, 'Who can call each capability'),
      table(['function', 'effect', 'plugins'], g.capabilities.map((c) => [c.function,
        c.write ? h('span', { class: 'badge write' }, 'WRITE') : h('span', { class: 'badge' }, c.effect), c.plugins.join(', ')]), 'No capability is granted.'),
      g.violations.length ? [h('h2', {}, 'Violations'), h('ul', {}, g.violations.map((v) => h('li', {}, `${v.plugin || ''} ${v.rule}: ${v.message}`)))] : null);
  },
};

// A plugin's version history (from the log) and, for an operator, the
// reviewer's diff of two versions: imports and reachable grants added or
// removed, writes marked.
async function versions(name) {
  const out = $('#versions');
  const r = await api('GET', '/v1/plugins/' + encodeURIComponent(name) + '/history');
  if (!r.ok) { out.replaceChildren(h('p', { class: 'message error' }, errorText(r.error))); return; }
  const events = r.doc.events;
  const digests = [...new Set(events.map((e) => e.digest).filter((d) => d))];
  const rows = events.slice().reverse().map((e) => [String(e.seq), time(e.time_ms), h('span', { class: 'type' }, e.kind),
    e.digest ? h('span', { class: 'id' }, e.digest.slice(0, 23)) : '—', e.by || '—', e.detail]);
  out.replaceChildren(table(['#', 'time', 'event', 'digest', 'by', 'detail'], rows, 'No version is recorded yet.'));
  // Diffing compiles both versions: offered to operators only (the API
  // refuses anyone else).
  if (!state.me.roles.includes('operator') || digests.length < 2) return;
  const pick = (id, chosen) => h('select', { id }, digests.map((d) => h('option', { value: d, selected: d === chosen }, d.slice(0, 23))));
  const a = pick('v-a', digests[digests.length - 2]);
  const b = pick('v-b', digests[digests.length - 1]);
  const result = h('div', { id: 'v-diff' });
  const run = async () => {
    const q = new URLSearchParams({ a: a.value, b: b.value });
    const d = await api('GET', '/v1/plugins/' + encodeURIComponent(name) + '/diff?' + q.toString());
    if (!d.ok) { result.replaceChildren(h('p', { class: 'message error' }, errorText(d.error))); return; }
    const x = d.doc;
    const line = (sign, text, write) => h('li', { class: sign === '+' ? 'added' : 'removed' }, `${sign} ${text}`,
      write ? [' ', h('span', { class: 'badge write' }, 'WRITE')] : null);
    const items = [
      ...x.imports_added.map((i) => line('+', 'import ' + i.function, i.write)),
      ...x.imports_removed.map((i) => line('-', 'import ' + i.function, i.write)),
      ...x.grants_added.map((g) => line('+', 'grant ' + g)),
      ...x.grants_removed.map((g) => line('-', 'grant ' + g)),
      ...x.hosts_added.map((g) => line('+', 'host ' + g)),
      ...x.hosts_removed.map((g) => line('-', 'host ' + g)),
      ...x.secrets_added.map((g) => line('+', 'secret ' + g)),
      ...x.secrets_removed.map((g) => line('-', 'secret ' + g)),
      ...x.b_ungranted.map((g) => line('+', 'ungranted ' + g + ' (B would be refused)')),
    ];
    result.replaceChildren(h('p', { class: 'muted' }, `${x.a.slice(0, 23)} → ${x.b.slice(0, 23)}`),
      items.length ? h('ul', { class: 'diff' }, items) : empty('The two versions import and reach the same.'));
  };
  out.append(h('h2', {}, 'Diff two versions'), h('p', {}, 'A ', a, ' B ', b, ' ', h('button', { id: 'v-run', onclick: run }, 'Diff')), result);
}

// ---- KPIs ----------------------------------------------------------------------

const NS = 'http://www.w3.org/2000/svg';
function svgEl(tag, attrs, text) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

function bars(title, items) {
  const max = Math.max(1, ...items.map((i) => i.value));
  const W = 360;
  const row = 22;
  const svg = svgEl('svg', { class: 'chart', viewBox: `0 0 ${W} ${items.length * row + 4}`, width: W, height: items.length * row + 4, role: 'img', 'aria-label': title });
  svg.append(svgEl('title', {}, title));
  items.forEach((it, i) => {
    const y = i * row + 2;
    svg.append(svgEl('text', { x: 0, y: y + 14 }, it.label));
    svg.append(svgEl('rect', { x: 120, y, width: Math.max(1, (it.value / max) * (W - 170)), height: row - 6, fill: it.color || '#3b4a6b' }));
    svg.append(svgEl('text', { x: 126 + (it.value / max) * (W - 170), y: y + 14 }, String(it.value)));
  });
  return svg;
}

// A chart over time: one column per bucket, the parts of `parts` stacked
// in it. Each bar carries its figure in data attributes (data-part,
// data-value, data-start), the chart its totals (data-total-<part>), so
// what it shows can be read without pixels; its <title> and <desc> say it
// in words for a screen reader.
function timeChart(id, title, buckets, parts, fmt) {
  const W = 320; const H = 110; const left = 44; const bottom = 16;
  const n = Math.max(1, buckets.length);
  const colW = (W - left) / n;
  const value = (p, b) => { const v = p.value(b); return v === null || v === undefined ? null : v; };
  const max = Math.max(0, ...buckets.map((b) => parts.reduce((s, p) => s + (value(p, b) || 0), 0)));
  const scale = max > 0 ? (H - bottom - 6) / max : 0;
  const svg = svgEl('svg', { class: 'chart series', id, viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': title, 'data-buckets': buckets.length, preserveAspectRatio: 'xMinYMin meet' });
  const totals = {};
  const words = [];
  for (const p of parts) {
    const vals = buckets.map((b) => value(p, b)).filter((v) => v !== null);
    totals[p.key] = vals.reduce((s, v) => s + v, 0);
    svg.setAttribute('data-total-' + p.key, String(totals[p.key]));
    words.push(`${p.label}: ${p.total ? p.total(totals[p.key], vals) : fmt(totals[p.key])}`);
  }
  svg.append(svgEl('title', {}, title), svgEl('desc', {}, words.join('; ')));
  svg.append(svgEl('line', { x1: left, y1: H - bottom, x2: W, y2: H - bottom, stroke: '#aab2c2' }));
  svg.append(svgEl('text', { x: 0, y: 12 }, fmt(max)), svgEl('text', { x: 0, y: H - bottom }, fmt(0)));
  buckets.forEach((b, i) => {
    let y = H - bottom;
    for (const p of parts) {
      const v = value(p, b);
      if (v === null) continue;
      const hgt = v * scale;
      y -= hgt;
      const r = svgEl('rect', { class: 'bar', x: left + i * colW + 1, y, width: Math.max(1, colW - 2), height: Math.max(v > 0 ? 1 : 0, hgt), fill: p.color,
        'data-part': p.key, 'data-value': v, 'data-start': b.start_ms });
      r.append(svgEl('title', {}, `${time(b.start_ms)} ${p.label}: ${fmt(v)}`));
      svg.append(r);
    }
  });
  if (buckets.length) {
    svg.append(svgEl('text', { x: left, y: H - 4 }, time(buckets[0].start_ms).slice(5, 16)));
    const last = svgEl('text', { x: W, y: H - 4, 'text-anchor': 'end' }, time(buckets[buckets.length - 1].start_ms).slice(5, 16));
    svg.append(last);
  }
  const legend = h('p', { class: 'legend' }, parts.map((p) => h('span', { class: 'key', 'data-color': p.color }, h('span', { class: 'swatch ' + p.key }), p.label)));
  return h('figure', { class: 'series-chart' }, h('figcaption', {}, title), svg, parts.length > 1 ? legend : null);
}

pages.kpi = {
  window: { bucket: 'hour', from: '', to: '' },
  async render() {
    show(h('h1', {}, 'KPIs'), h('section', { class: 'card', id: 'kpi-framework-card' }, 'Reading the log…'),
      h('div', { id: 'kpi' }, 'Reading the log…'), h('section', { class: 'card', id: 'kpi-series-card' }));
    await Promise.all([this.framework(), this.table(), this.series()]);
  },
  // The framework's table (GET /v1/kpi/framework, as `charter kpi
  // --framework`): five dimensions, one column per pattern and overall.
  async framework() {
    const r = await api('GET', '/v1/kpi/framework');
    const card = $('#kpi-framework-card');
    if (!card) return;
    if (!r.ok) { card.replaceChildren(h('h2', {}, 'The framework\'s table'), h('p', { class: 'message error' }, errorText(r.error))); return; }
    const t = r.doc;
    const cols = Object.entries(t.patterns).concat([['overall', t.overall]]);
    const dec = (x) => x === null || x === undefined ? '—' : x.toFixed(2);
    const risk = (d) => h('span', { class: d.risk.unauthorized_actions === 0 ? 'badge ok' : 'badge bad' }, `${d.risk.unauthorized_actions} (target 0)`);
    const rows = [
      ['efficiency', 'runs', (d) => String(d.efficiency.runs)],
      ['', 'cycle time p50', (d) => dur(d.efficiency.cycle_time_ms_p50)],
      ['', 'retries', (d) => String(d.efficiency.retries)],
      ['', 'escalations avoided', (d) => String(d.efficiency.escalations_avoided)],
      ['customer', 'resolution confidence', (d) => dec(d.customer.resolution_confidence)],
      ['', 'handoff rate', (d) => pct(d.customer.handoff_rate)],
      ['decision quality', 'exception consistency', (d) => pct(d.decision_quality.exception_consistency)],
      ['', 'policy adherence', (d) => pct(d.decision_quality.policy_adherence)],
      ['adoption', 'proposal acceptance', (d) => pct(d.adoption.proposal_acceptance_rate)],
      ['risk', 'unauthorized actions', risk],
    ];
    card.replaceChildren(h('h2', {}, 'The framework\'s table'),
      h('p', { class: 'muted' }, 'Per deployment pattern ([deployment] pattern) and overall, from the event log (charter kpi --framework).'),
      h('div', { class: 'tablewrap' }, h('table', { id: 'kpi-framework' },
        h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'dimension'), h('th', { scope: 'col' }, 'measure'), cols.map(([p]) => h('th', { scope: 'col' }, p)))),
        h('tbody', {}, rows.map(([dim, measure, cell]) => h('tr', {}, h('th', { scope: 'row' }, dim), h('td', {}, measure), cols.map(([, d]) => h('td', {}, cell(d)))))))));
  },
  async table() {
    const r = await api('GET', '/v1/kpi');
    const out = $('#kpi');
    if (!out) return;
    if (!r.ok) { out.replaceChildren(h('p', { class: 'message error' }, errorText(r.error))); return; }
    const k = r.doc;
    const calls = { allowed: 0, proposed: 0, denied: 0 };
    const rows = [];
    for (const [plugin, fns] of Object.entries(k.calls)) {
      for (const [fn, c] of Object.entries(fns)) {
        calls.allowed += c.allowed; calls.proposed += c.proposed; calls.denied += c.denied;
        rows.push([plugin, fn, String(c.allowed), String(c.proposed), String(c.denied)]);
      }
    }
    const p = k.proposals;
    const b = k.blocked_by_kind;
    out.replaceChildren(
      h('div', { class: 'cols' },
        h('section', { class: 'card' }, h('h2', {}, 'Risk'),
          kv([['unauthorized actions executed', h('span', { class: k.unauthorized_actions_executed === 0 ? 'badge ok' : 'badge bad', id: 'unauthorized' }, String(k.unauthorized_actions_executed))],
            ['blocked unauthorized attempts', String(k.blocked_unauthorized_attempts)],
            ['· plugins refused at load', String(b.plugin_refused_at_load)], ['· calls denied', String(b.call_denied)],
            ['· approvals refused', String(b.approval_refused)], ['· escalation resolutions refused', String(b.escalation_resolution_refused)],
            ['· authentications refused', String(b.authentication_refused)]]),
          k.unauthorized_detail.length ? h('ul', {}, k.unauthorized_detail.map((d) => h('li', {}, d))) : null),
        h('section', { class: 'card' }, h('h2', {}, 'Decision quality'),
          kv([['proposals made', String(p.created)], ['executed', String(p.executed)], ['rejected', String(p.rejected)], ['expired', String(p.expired)],
            ['failed after approval', String(p.failed)], ['pending', String(p.pending)], ['acceptance rate', pct(p.acceptance_rate)],
            ['decision latency p50', dur(p.decision_latency_ms_p50)], ['decision latency p95', dur(p.decision_latency_ms_p95)]]))),
      h('section', { class: 'card' }, h('h2', {}, 'Calls by decision'),
        bars('Calls by decision', [{ label: 'allowed', value: calls.allowed, color: '#1f7a3a' }, { label: 'proposed', value: calls.proposed, color: '#b07b00' }, { label: 'denied', value: calls.denied, color: '#9b2c2c' }]),
        table(['plugin', 'function', 'allowed', 'proposed', 'denied'], rows, 'No call yet.')),
      h('section', { class: 'card' }, h('h2', {}, 'Efficiency, customer and adoption (per workflow)'),
        table(['workflow', 'runs', 'completed', 'failed', 'cancelled', 'in progress', 'cycle p50', 'cycle p95', 'attempts', 'retries', 'escalations', 'handoff rate', 'escalations avoided'],
          Object.entries(k.workflows).map(([w, x]) => [w, String(x.runs), String(x.completed), String(x.failed), String(x.cancelled), String(x.in_progress),
            dur(x.cycle_time_ms_p50), dur(x.cycle_time_ms_p95), String(x.step_attempts), String(x.retries), String(x.escalations), pct(x.handoff_rate), String(x.escalations_avoided)]),
          'No workflow has run yet.')),
      h('p', { class: 'muted' }, `${k.events} events, ${k.steps} step executions in the log.`));
  },
  async series() {
    const card = $('#kpi-series-card');
    if (!card) return;
    const w = this.window;
    const bucket = h('select', { id: 'k-bucket', name: 'k-bucket' }, ['hour', 'day'].map((b) => h('option', { value: b, selected: b === w.bucket }, b === 'hour' ? 'per hour' : 'per day')));
    const [froml, from] = field('k-from', 'From', w.from, { placeholder: 'default: 24 hours / 30 days before', size: 18 });
    const [tol, to] = field('k-to', 'To', w.to, { placeholder: 'default: now', size: 18 });
    const out = h('div', { id: 'kpi-series', 'aria-live': 'polite' }, 'Reading the log…');
    const form = h('form', { class: 'filters', 'aria-label': 'KPIs over time', onsubmit: (ev) => {
      ev.preventDefault();
      this.window = { bucket: bucket.value, from: from.value.trim(), to: to.value.trim() };
      this.series();
    } }, h('label', { for: 'k-bucket' }, 'Buckets', bucket), froml, tol, h('button', { type: 'submit', id: 'k-apply' }, 'Show'));
    card.replaceChildren(h('h2', {}, 'Over time'), form, out);
    const r = await api('GET', '/v1/kpi/series' + query(w));
    if (!r.ok) { out.replaceChildren(h('p', { class: 'message error', id: 'kpi-series-error', role: 'alert' }, errorText(r.error))); return; }
    const s = r.doc;
    const bs = s.buckets;
    const count = (x) => String(Math.round(x));
    const ms = (x) => dur(Math.round(x));
    const median = (_, vals) => vals.length ? `up to ${dur(Math.max(...vals))} (median per ${s.bucket})` : 'none';
    const rate = (b) => b.handoff_rate === null ? null : b.handoff_rate;
    out.replaceChildren(
      h('p', { class: 'muted' }, `${bs.length} buckets, one per ${s.bucket}, ${time(s.from_ms)} to ${time(s.to_ms)}.`),
      h('div', { class: 'charts' },
        timeChart('chart-calls', 'Calls by decision', bs, [
          { key: 'allowed', label: 'allowed', color: '#1f7a3a', value: (b) => b.calls_allowed },
          { key: 'proposed', label: 'proposed', color: '#b07b00', value: (b) => b.calls_proposed },
          { key: 'denied', label: 'denied', color: '#9b2c2c', value: (b) => b.calls_denied }], count),
        timeChart('chart-latency', 'Decision latency (median per bucket)', bs, [
          { key: 'p50', label: 'median', color: '#3b4a6b', value: (b) => b.decision_latency_ms_p50, total: median }], ms),
        timeChart('chart-cycle', 'Cycle time of runs that ended (median per bucket)', bs, [
          { key: 'p50', label: 'median', color: '#3b6b5a', value: (b) => b.cycle_time_ms_p50, total: median }], ms),
        timeChart('chart-handoff', 'Handoff rate (runs started, handed to people)', bs, [
          { key: 'rate', label: 'handoff rate', color: '#6b3b6b', value: rate, total: (_, vals) => vals.length ? `${pct(vals.reduce((a, v) => a + v, 0) / vals.length)} on average` : 'no run' }], (x) => pct(x)),
        timeChart('chart-unauthorized', 'Unauthorized actions executed (target 0)', bs, [
          { key: 'executed', label: 'executed', color: '#9b2c2c', value: (b) => b.unauthorized_actions_executed }], count)));
  },
};

// ---- start ---------------------------------------------------------------------

window.addEventListener('hashchange', route);
document.addEventListener('DOMContentLoaded', async () => {
  $('#signout').addEventListener('click', () => signOut('Signed out.'));
  if (!token()) { signInPage(); return; }
  const r = await api('GET', '/v1/whoami');
  if (r.ok) await start(r.doc); else signOut(errorText(r.error));
});
