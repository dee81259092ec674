/* Proxymage console: reads the gateway's JSON API, listens to its SSE streams, sends its commands.
 *
 * Plain JavaScript for current Chrome, Firefox, Edge and Safari 16: no build step, no library.
 * Authentication is the HttpOnly cookie set at login (sent by fetch and EventSource on same-origin
 * requests); this script never sees the token. A 401 sends the user back to the login page.
 * Every value from the API is written with textContent (never innerHTML): data stays inert.
 */
(function () {
  'use strict';

  const LABELS = JSON.parse(document.getElementById('console-labels').textContent);
  const BODY = document.body;
  const API = '/api/v1';
  // Event names of the gateway's SSE streams (one per kind of change); any of them means "reload".
  const SSE_EVENTS = [
    'message', 'enrolment', 'meeting', 'identity', 'catalogue', 'selection', 'removal', 'study-status',
    'expertise', 'experts', 'rcp-settings', 'withdrawal', 'resync', 'update', 'change',
  ];

  // ---------------------------------------------------------------------------------------------------
  // Small helpers

  function h(tag, attrs) {
    const node = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (name) {
        const value = attrs[name];
        if (value === null || value === undefined || value === false) return;
        if (name === 'class') node.className = value;
        else if (name === 'text') node.textContent = String(value);
        else if (name.slice(0, 2) === 'on') node.addEventListener(name.slice(2), value);
        else node.setAttribute(name, value === true ? '' : String(value));
      });
    }
    for (let index = 2; index < arguments.length; index += 1) append(node, arguments[index]);
    return node;
  }

  function append(node, child) {
    if (child === null || child === undefined || child === false) return;
    if (Array.isArray(child)) child.forEach(function (item) { append(node, item); });
    else node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }

  function byId(id) { return document.getElementById(id); }

  function frDate(iso) {
    if (typeof iso !== 'string') return '';
    const match = /^(\d{4})-(\d{2})-(\d{2})/.exec(iso);
    return match ? match[3] + '/' + match[2] + '/' + match[1] : iso;
  }

  function frDateTime(iso) {
    const moment = new Date(iso);
    if (Number.isNaN(moment.getTime())) return '';
    return moment.toLocaleString('fr-FR', { dateStyle: 'short', timeStyle: 'short' });
  }

  function frTime(iso) {
    const moment = new Date(iso);
    if (Number.isNaN(moment.getTime())) return '';
    return moment.toLocaleTimeString('fr-FR', { hour: '2-digit', minute: '2-digit' });
  }

  function plural(count, singular, pluralForm) { return count + ' ' + (count > 1 ? pluralForm : singular); }

  // Only web addresses become links: a `javascript:` URL from a misconfigured template never runs.
  function safeUrl(value) {
    if (typeof value !== 'string' || value === '') return null;
    try {
      const url = new URL(value, location.href);
      return url.protocol === 'http:' || url.protocol === 'https:' ? url.href : null;
    } catch (error) {
      return null;
    }
  }

  function path() {
    return '/' + Array.prototype.map.call(arguments, function (part) { return encodeURIComponent(part); }).join('/');
  }

  function showAlert(message) {
    const box = byId('alerte');
    box.textContent = message;
    box.hidden = !message;
  }

  function setStatus(message, kind) {
    const status = byId('form-status');
    if (!status) return;
    status.textContent = message;
    status.className = 'status' + (kind ? ' status-' + kind : '');
  }

  // Runs `task` once now, and once more after it if it was asked again meanwhile (never two at a time).
  function serialised(task) {
    let running = false;
    let again = false;
    let timer = null;
    async function run() {
      if (running) { again = true; return; }
      running = true;
      try {
        do { again = false; await task(); } while (again);
      } catch (error) {
        reportError(error);
      } finally {
        running = false;
      }
    }
    return function soon() {
      if (timer !== null) return;
      timer = setTimeout(function () { timer = null; run(); }, 80);
    };
  }

  // ---------------------------------------------------------------------------------------------------
  // API

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  function toLogin() {
    const next = location.pathname + location.search;
    location.assign('/console/login?expired=1&next=' + encodeURIComponent(next));
  }

  // The gateway's messages are in English (for programs): the page says in French what went wrong, naming
  // the refused fields (their path) and why (pydantic's error type), never the English text.
  function describeError(status, data) {
    const detail = data && data.detail;
    let fields = '';
    if (Array.isArray(detail)) {
      fields = detail.map(function (item) {
        const where = Array.isArray(item.loc) ? item.loc.slice(1).join('.') : '';
        const why = LABELS.errors[item.type] || LABELS.errors.fallback;
        return (where ? where + ' : ' : '') + why;
      }).join(' ; ');
    }
    if (status === 403) return 'Votre rôle ne permet pas cette action.';
    if (status === 404) return 'Introuvable : cet identifiant est inconnu de Proxymage.';
    if (status === 422 || status === 400) return 'Saisie refusée : ' + (fields || 'vérifiez les champs.');
    if (status === 503) return 'La passerelle Proxymage est momentanément indisponible : réessayez dans un instant.';
    return 'La passerelle Proxymage a répondu une erreur (' + status + ').';
  }

  async function api(method, url, payload) {
    const init = { method: method, credentials: 'same-origin', headers: { Accept: 'application/json' } };
    if (payload !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(payload);
    }
    let response;
    try {
      response = await fetch(url, init);
    } catch (error) {
      throw new ApiError(0, 'La passerelle Proxymage ne répond pas : vérifiez la connexion puis réessayez.');
    }
    if (response.status === 401) {
      toLogin();
      throw new ApiError(401, 'Session expirée.');
    }
    const text = await response.text();
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch (error) { data = null; }
    }
    if (!response.ok) throw new ApiError(response.status, describeError(response.status, data));
    return data;
  }

  function reportError(error) {
    if (error instanceof ApiError && error.status === 401) return;
    showAlert(error && error.message ? error.message : String(error));
  }

  // Reloads on every event of the stream, and when it (re)connects; reconnects with backoff if the
  // browser gives up (e.g. the gateway restarted), reloading then too so that a 401 reaches the login.
  function live(url, reload) {
    let source = null;
    let delay = 1000;
    function connect() {
      source = new EventSource(url);
      source.addEventListener('open', function () { delay = 1000; reload(); });
      SSE_EVENTS.forEach(function (name) { source.addEventListener(name, reload); });
      source.addEventListener('error', function () {
        if (source.readyState !== EventSource.CLOSED) return;
        reload();
        setTimeout(connect, delay);
        delay = Math.min(delay * 2, 15000);
      });
    }
    connect();
    window.addEventListener('pagehide', function () { if (source) source.close(); });
  }

  // ---------------------------------------------------------------------------------------------------
  // Filters (§4.1): the same fields on the RCP page and in the Imaging tab's "Filtres" panel

  function filterInputs(prefix) {
    return {
      modalities: Array.prototype.slice.call(document.querySelectorAll('input[id^="' + prefix + '-modality-"]')),
      kinds: Array.prototype.slice.call(document.querySelectorAll('input[name="' + prefix + '-date-kind"]')),
      from: byId(prefix + '-date-from'),
      to: byId(prefix + '-date-to'),
      months: byId(prefix + '-months'),
    };
  }

  function invalid(input, message) {
    input.setCustomValidity(message);
    input.reportValidity();
    input.addEventListener('input', function clear() {
      input.setCustomValidity('');
      input.removeEventListener('input', clear);
    });
    return null;
  }

  // The filters as CONTRACT.md spells them, or null (with the field's message shown) when incomplete.
  function readFilters(prefix) {
    const inputs = filterInputs(prefix);
    const modalities = inputs.modalities.filter(function (box) { return box.checked; })
      .map(function (box) { return box.value; });
    const chosen = inputs.kinds.filter(function (radio) { return radio.checked; })[0];
    const kind = chosen ? chosen.value : 'none';
    if (kind === 'between') {
      if (!inputs.from.value.trim()) return invalid(inputs.from, 'Indiquez la première date (JJ/MM/AAAA).');
      if (!inputs.to.value.trim()) return invalid(inputs.to, 'Indiquez la dernière date (JJ/MM/AAAA).');
      const from = readDate(inputs.from);
      const to = readDate(inputs.to);
      if (!from) return invalid(inputs.from, DATE_FORMAT_MESSAGE);
      if (!to) return invalid(inputs.to, DATE_FORMAT_MESSAGE);
      if (from > to) return invalid(inputs.to, 'La dernière date précède la première.');
      return { modalities: modalities, date_filter: { kind: 'between', from: from, to: to } };
    }
    if (kind === 'within_months') {
      const months = Number(inputs.months.value);
      if (!Number.isInteger(months) || months < 1 || months > 1200) {
        return invalid(inputs.months, 'Indiquez un nombre de mois entre 1 et 1200.');
      }
      return { modalities: modalities, date_filter: { kind: 'within_months', months: months } };
    }
    return { modalities: modalities, date_filter: { kind: 'none' } };
  }

  function writeFilters(prefix, filters) {
    if (!filters) return;
    const inputs = filterInputs(prefix);
    const wanted = filters.modalities || [];
    inputs.modalities.forEach(function (box) { box.checked = wanted.indexOf(box.value) >= 0; });
    const dateFilter = filters.date_filter || { kind: 'none' };
    inputs.kinds.forEach(function (radio) { radio.checked = radio.value === dateFilter.kind; });
    writeDate(inputs.from, dateFilter.from || '');
    writeDate(inputs.to, dateFilter.to || '');
    inputs.months.value = dateFilter.months ? String(dateFilter.months) : '';
  }

  function describeFilters(filters) {
    if (!filters) return 'Tous les examens (aucun filtre).';
    const modalities = filters.modalities && filters.modalities.length
      ? 'modalités ' + filters.modalities.join(', ')
      : 'toutes les modalités';
    const dateFilter = filters.date_filter || { kind: 'none' };
    let dates = 'sans filtre de date';
    if (dateFilter.kind === 'between') dates = 'examens du ' + frDate(dateFilter.from) + ' au ' + frDate(dateFilter.to);
    if (dateFilter.kind === 'within_months') dates = 'examens de moins de ' + dateFilter.months + ' mois';
    return 'Filtres appliqués : ' + modalities + ' ; ' + dates + '. Les examens sélectionnés restent toujours listés.';
  }

  // Query parameters overriding the RCP's defaults (CONTRACT.md "Gateway REST").
  function filterQuery(filters) {
    const query = new URLSearchParams();
    if (filters === 'all') {
      query.set('all', 'true');
      return query;
    }
    if (!filters) return query;
    if (filters.modalities.length) query.set('modalities', filters.modalities.join(','));
    else query.set('modalities', '');
    const dateFilter = filters.date_filter;
    if (dateFilter.kind === 'between') {
      query.set('date_from', dateFilter.from);
      query.set('date_to', dateFilter.to);
    } else if (dateFilter.kind === 'within_months') {
      query.set('within_months', String(dateFilter.months));
    } else if (filters.modalities.length) {
      // No query parameter says "no date filter" while keeping a modality filter: a range covering every
      // dated study stands in for it (undated studies are then hidden, unless selected).
      query.set('date_from', '1900-01-01');
      query.set('date_to', '9999-12-31');
    }
    if (!filters.modalities.length && dateFilter.kind === 'none') return filterQuery('all');
    return query;
  }

  // ---------------------------------------------------------------------------------------------------
  // Identity outcome (§2): matched, no consent, or not found with what to check in the DCC

  // The French text of a reason from the API (`reason_text`; `reason` only from an older gateway).
  function reasonText(item) {
    if (!item) return '';
    return item.reason_text || item.reason || '';
  }

  function renderIdentity(box, identity, note, catalogue, withdrawal) {
    const status = identity && identity.status ? identity.status : 'pending';
    box.className = 'identity identity-' + status;
    box.replaceChildren();
    let title = LABELS.identity[status] || status;
    if (status === 'matched' && typeof identity.pacs_patients === 'number') {
      title += ' (' + plural(identity.pacs_patients, 'dossier PACS', 'dossiers PACS') + ')';
    }
    append(box, h('p', { class: 'identity-title' }, h('strong', { text: title })));
    const detail = note || LABELS.identity_detail[status];
    if (detail) append(box, h('p', { text: detail }));
    if (status === 'error' && reasonText(identity)) append(box, h('p', { class: 'reason', text: reasonText(identity) }));
    if (status === 'withdrawn' && withdrawal) {
      append(box, h('p', { text: 'Annulée le ' + frDateTime(withdrawal.at) + '.' }));
      if (withdrawal.reason) append(box, h('p', { class: 'reason', text: 'Motif : ' + withdrawal.reason }));
    }
    if (status === 'matched' && catalogue && catalogue.status === 'pending') {
      append(box, h('p', { text: 'Recherche des examens du patient dans MIRC en cours…' }));
    }
    if (status === 'matched' && catalogue && catalogue.status === 'error') {
      append(box, h('p', { class: 'reason', text: 'La liste des examens n\'a pas pu être obtenue de MIRC'
        + (reasonText(catalogue) ? ' : ' + reasonText(catalogue) : '') + '. Utiliser « Actualiser » plus tard.' }));
    }
    const misses = identity && Array.isArray(identity.near_misses) ? identity.near_misses : [];
    if (status === 'unmatched' && misses.length) {
      append(box, h('p', { text: 'Pistes à vérifier dans le DCC (un patient de MIRC diffère sur un seul trait) :' }));
      append(box, h('ul', { class: 'hints' }, misses.map(function (miss) {
        return h('li', { text: LABELS.hints[miss.trait + '/' + miss.kind] || LABELS.hint_fallback });
      })));
    }
  }

  function retrievalOf(study) { return study.retrieval || { status: 'not_requested' }; }

  function stateText(study) {
    if (!study.selected) return '';
    const retrieval = retrievalOf(study);
    const label = LABELS.retrieval[retrieval.status] || retrieval.status;
    return reasonText(retrieval) ? label + ' (' + reasonText(retrieval) + ')' : label;
  }

  // The state column: an available study links to the viewer (new tab), like the meeting's study cards.
  function stateCell(study) {
    const retrieval = retrievalOf(study);
    const viewer = study.selected && retrieval.status === 'available' ? safeUrl(retrieval.viewer_url) : null;
    if (!viewer) return h('td', { class: 'state', text: stateText(study) });
    const label = study.description || 'Examen sans description';
    return h('td', { class: 'state' }, h('a', {
      class: 'viewer-link', href: viewer, target: '_blank', rel: 'noopener noreferrer',
      'aria-label': 'Visuel disponible : ouvrir ' + label + ' dans la visionneuse (nouvel onglet)',
    }, 'Visuel disponible'));
  }

  // ---------------------------------------------------------------------------------------------------
  // The Imaging tab of an enrolment (§5, §6): studies after filters, check boxes, expertise, Validate

  function selectionTab(enrolmentId) {
    const table = byId('studies');
    const rows = table.querySelector('tbody');
    const expertise = byId('expertise');
    const panel = byId('filters-panel');
    const toggle = byId('btn-filters');
    const tab = {
      enrolmentId: enrolmentId,
      data: null,
      picked: null, // the user's ticks (null until the first load or tick)
      expertiseTouched: false,
      overrides: null, // null: the RCP's filters; 'all'; or filters read from the panel
      onLoaded: null,
    };

    tab.reload = serialised(async function () {
      if (!tab.enrolmentId) return;
      const query = filterQuery(tab.overrides).toString();
      let data;
      try {
        data = await api('GET', API + path('enrolments', tab.enrolmentId) + (query ? '?' + query : ''));
      } catch (error) {
        if (error instanceof ApiError && error.status === 404) {
          renderIdentity(byId('identity'), null, 'Inscription en cours d\'enregistrement par Proxymage…');
          return;
        }
        throw error;
      }
      showAlert('');
      tab.data = data;
      render();
      if (tab.onLoaded) tab.onLoaded(data);
    });

    function selectedOnServer() {
      return (tab.data.studies || []).filter(function (study) { return study.selected; })
        .map(function (study) { return study.study_instance_uid; });
    }

    function render() {
      const data = tab.data;
      renderIdentity(byId('identity'), data.identity, null, data.catalogue, data.withdrawal);
      if (tab.picked === null) tab.picked = new Set(selectedOnServer());
      if (!tab.expertiseTouched) expertise.checked = Boolean(data.expertise && data.expertise.requested);
      byId('filters-summary').textContent = tab.overrides === 'all'
        ? describeFilters(null)
        : describeFilters(tab.overrides || data.filters);
      if (panel.hidden) writeFilters('f', tab.overrides && tab.overrides !== 'all' ? tab.overrides : data.filters);
      const studies = data.studies || [];
      rows.replaceChildren();
      studies.forEach(function (study) {
        const uid = study.study_instance_uid;
        const when = frDate(study.date);
        const box = h('input', {
          type: 'checkbox',
          value: uid,
          'aria-label': 'Sélectionner l\'examen ' + (study.description || 'sans description') + (when ? ' du ' + when : ''),
          onchange: function (event) {
            if (event.target.checked) tab.picked.add(uid); else tab.picked.delete(uid);
          },
        });
        box.checked = tab.picked.has(uid);
        box.dataset.editableBy = 'select';
        box.disabled = lacks('select');
        rows.append(h('tr', { 'data-uid': uid, class: study.selected ? 'selected' : null },
          h('td', null, box),
          // A selected study no longer in the shown catalogue (e.g. withdrawn) is named by its UID.
          h('td', { text: study.description || (study.selected ? 'Examen ' + uid : '') }),
          h('td', { text: study.pacs || '' }),
          h('td', { text: when }),
          h('td', { text: (study.modalities || []).join('/') }),
          h('td', { class: 'number', text: study.images === null || study.images === undefined ? '' : study.images }),
          h('td', { class: 'number', text: study.series === null || study.series === undefined ? '' : study.series }),
          stateCell(study)));
      });
      byId('studies-empty').hidden = studies.length > 0;
      table.hidden = studies.length === 0;
    }

    expertise.addEventListener('change', function () { tab.expertiseTouched = true; });

    toggle.addEventListener('click', function () {
      const open = panel.hidden;
      panel.hidden = !open;
      toggle.setAttribute('aria-expanded', String(open));
      if (open) {
        const first = panel.querySelector('input');
        if (first) first.focus();
      }
    });

    function closePanel() {
      panel.hidden = true;
      toggle.setAttribute('aria-expanded', 'false');
      toggle.focus();
    }

    byId('filters-ok').addEventListener('click', function () {
      const filters = readFilters('f');
      if (!filters) return;
      tab.overrides = filters;
      closePanel();
      tab.reload();
    });
    byId('filters-rcp').addEventListener('click', function () {
      tab.overrides = null;
      closePanel();
      tab.reload();
    });
    byId('filters-all').addEventListener('click', function () {
      tab.overrides = 'all';
      closePanel();
      tab.reload();
    });

    tab.selection = function () {
      return {
        study_instance_uids: Array.from(tab.picked || []),
        expertise_requested: expertise.checked,
      };
    };

    tab.listen = function (id) {
      tab.enrolmentId = id;
      live(API + path('enrolments', id, 'events'), tab.reload);
      tab.reload();
    };
    return tab;
  }

  // ---------------------------------------------------------------------------------------------------
  // Dates JJ/MM/AAAA (issue 15): typed and shown the French way whatever the browser's language (a text
  // field: type=date would follow the browser's locale, mm/dd/yyyy in en-US); the API gets ISO dates.

  const DATE_FORMAT_MESSAGE = 'Date invalide : saisir JJ/MM/AAAA, par exemple 22/03/2023.';

  function pad2(number) { return (number < 10 ? '0' : '') + number; }

  // `22/03/2023` (also 22-03-2023, 22.03.2023, 2/3/2023) -> `2023-03-22`; null when not a real date.
  function isoFromFr(text) {
    const match = /^\s*(\d{1,2})[/.-](\d{1,2})[/.-](\d{4})\s*$/.exec(text || '');
    if (!match) return null;
    const day = Number(match[1]);
    const month = Number(match[2]);
    const year = Number(match[3]);
    const moment = new Date(Date.UTC(year, month - 1, day));
    if (year < 1000 || moment.getUTCFullYear() !== year || moment.getUTCMonth() !== month - 1
      || moment.getUTCDate() !== day) return null;
    return year + '-' + pad2(month) + '-' + pad2(day);
  }

  // A message beside a field (and as its validity message, so that reportValidity says it in French).
  function fieldMessage(input, message) {
    const id = input.id + '-error';
    let box = byId(id);
    if (!box && message) {
      box = h('span', { id: id, class: 'field-error' });
      const wrapper = input.closest('.with-hint'); // the field's grid cell: the message stays in it
      if (wrapper) wrapper.append(box); else input.after(box);
      input.setAttribute('aria-describedby', ((input.getAttribute('aria-describedby') || '') + ' ' + id).trim());
    }
    if (box) {
      box.textContent = message;
      box.hidden = !message;
    }
    input.setCustomValidity(message);
    if (message) input.setAttribute('aria-invalid', 'true'); else input.removeAttribute('aria-invalid');
  }

  function dateProblem(input) {
    const text = input.value.trim();
    if (!text) return input.required ? 'Indiquez la date au format JJ/MM/AAAA.' : '';
    const iso = isoFromFr(text);
    if (!iso) return DATE_FORMAT_MESSAGE;
    if (input.dataset.max && iso > input.dataset.max) {
      return 'La date ne peut pas être postérieure au ' + frDate(input.dataset.max) + '.';
    }
    return '';
  }

  // The field's date as ISO ('' when empty or invalid: its message is then shown).
  function readDate(input) {
    const problem = dateProblem(input);
    fieldMessage(input, problem);
    return problem ? '' : (isoFromFr(input.value) || '');
  }

  function writeDate(input, iso) {
    input.value = iso ? frDate(iso) : '';
    fieldMessage(input, '');
    input.setCustomValidity(dateProblem(input)); // an empty required field still says so, in French, at submit
  }

  // A small calendar beside each date field: a month of day buttons, in French, weeks starting on Monday;
  // choosing a day writes it JJ/MM/AAAA into the field. Typing stays the quick way (birth dates).
  const MONTHS = ['janvier', 'février', 'mars', 'avril', 'mai', 'juin', 'juillet', 'août', 'septembre', 'octobre',
    'novembre', 'décembre'];
  const WEEKDAYS = [['lu', 'lundi'], ['ma', 'mardi'], ['me', 'mercredi'], ['je', 'jeudi'], ['ve', 'vendredi'],
    ['sa', 'samedi'], ['di', 'dimanche']];

  function calendarIcon() {
    return icon('M7 2h2v2h6V2h2v2h3v18H4V4h3V2zm-1 8v10h12V10H6zm2 2h3v3H8v-3z');
  }

  function calendar(input) {
    const popup = h('div', { class: 'calendar', role: 'dialog', 'aria-label': 'Calendrier', hidden: true });
    const toggle = h('button', {
      type: 'button', class: 'calendar-toggle', title: 'Calendrier', 'aria-expanded': 'false',
      'aria-label': 'Ouvrir le calendrier',
    }, calendarIcon());
    let shown = null; // [year, month (0-11)]

    function close(focusField) {
      popup.hidden = true;
      toggle.setAttribute('aria-expanded', 'false');
      if (focusField) input.focus();
    }

    function show(year, month) {
      const moment = new Date(Date.UTC(year, month, 1));
      shown = [moment.getUTCFullYear(), moment.getUTCMonth()];
      const chosen = isoFromFr(input.value);
      const today = new Date();
      const todayIso = today.getFullYear() + '-' + pad2(today.getMonth() + 1) + '-' + pad2(today.getDate());
      const lead = (moment.getUTCDay() + 6) % 7; // Monday first
      const days = new Date(Date.UTC(shown[0], shown[1] + 1, 0)).getUTCDate();
      const rows = [];
      let cells = [];
      for (let blank = 0; blank < lead; blank += 1) cells.push(h('td'));
      for (let day = 1; day <= days; day += 1) {
        const iso = shown[0] + '-' + pad2(shown[1] + 1) + '-' + pad2(day);
        cells.push(h('td', null, h('button', {
          type: 'button', 'data-date': iso, class: iso === todayIso ? 'today' : null,
          'aria-label': day + ' ' + MONTHS[shown[1]] + ' ' + shown[0], 'aria-pressed': String(iso === chosen),
          onclick: function () {
            writeDate(input, iso);
            input.dispatchEvent(new Event('change', { bubbles: true }));
            close(true);
          },
        }, String(day))));
        if (cells.length === 7) { rows.push(h('tr', null, cells)); cells = []; }
      }
      if (cells.length) rows.push(h('tr', null, cells));
      function step(label, text, years, months) {
        return h('button', { type: 'button', 'aria-label': label, onclick: function () {
          show(shown[0] + years, shown[1] + months);
        } }, text);
      }
      popup.replaceChildren(
        h('div', { class: 'calendar-head' },
          step('Année précédente', '«', -1, 0), step('Mois précédent', '‹', 0, -1),
          h('span', { class: 'calendar-title', 'aria-live': 'polite', text: MONTHS[shown[1]] + ' ' + shown[0] }),
          step('Mois suivant', '›', 0, 1), step('Année suivante', '»', 1, 0)),
        h('table', null,
          h('thead', null, h('tr', null, WEEKDAYS.map(function (weekday) {
            return h('th', { scope: 'col' }, h('abbr', { title: weekday[1], text: weekday[0] }));
          }))),
          h('tbody', null, rows)));
    }

    toggle.addEventListener('click', function () {
      if (!popup.hidden) { close(true); return; }
      const chosen = isoFromFr(input.value);
      const start = chosen ? new Date(chosen + 'T00:00:00Z') : new Date();
      show(chosen ? start.getUTCFullYear() : start.getFullYear(), chosen ? start.getUTCMonth() : start.getMonth());
      popup.hidden = false;
      toggle.setAttribute('aria-expanded', 'true');
      const focus = popup.querySelector('button[aria-pressed="true"]') || popup.querySelector('button.today')
        || popup.querySelector('td button');
      if (focus) focus.focus();
    });
    popup.addEventListener('keydown', function (event) {
      if (event.key === 'Escape') { event.preventDefault(); close(true); }
    });
    document.addEventListener('click', function (event) {
      // The path as dispatched: a month button is no longer in the popup once the month is redrawn.
      const path = event.composedPath();
      if (!popup.hidden && path.indexOf(popup) < 0 && path.indexOf(toggle) < 0) close(false);
    });
    input.after(toggle, popup);
  }

  function dateFields() {
    document.querySelectorAll('input[data-date]').forEach(function (input) {
      calendar(input);
      // While typing, only the validity changes (no message flickering); leaving the field shows it.
      input.addEventListener('input', function () {
        const problem = dateProblem(input);
        if (!problem) fieldMessage(input, '');
        else input.setCustomValidity(problem);
      });
      input.addEventListener('change', function () {
        const iso = isoFromFr(input.value);
        if (iso) input.value = frDate(iso); // 2/3/2023 -> 02/03/2023
        fieldMessage(input, dateProblem(input));
      });
      input.setCustomValidity(dateProblem(input));
    });
  }

  // ---------------------------------------------------------------------------------------------------
  // Pick lists (issue 15): the RCPs, meetings and experts the gateway knows, offered where an id or an
  // expert is typed (a <datalist>: searchable by id or title, and a new id is still accepted).

  const PICK_SOURCES = {
    meeting: { url: '/meetings', key: 'meeting_id', label: function (meeting) {
      return [meeting.title || '', meeting.date ? 'du ' + frDate(meeting.date) : '', meeting.centre ? '— ' + meeting.centre : '']
        .filter(Boolean).join(' ');
    } },
    rcp: { url: '/rcps', key: 'rcp_id', label: function (rcp) { return rcp.title + ' — ' + rcp.centre; } },
    'expert-name': { url: '/experts', key: 'name', label: function (expert) { return expert.email; } },
    'expert-email': { url: '/experts', key: 'email', label: function (expert) { return expert.name; } },
  };

  // Fills the datalists and calls `onPick[kind](item, input)` when a field's value becomes a known one.
  function pickLists(onPick) {
    const handlers = onPick || {};
    const loads = {};
    Object.keys(PICK_SOURCES).forEach(function (kind) {
      const inputs = Array.prototype.slice.call(document.querySelectorAll('input[data-pick="' + kind + '"]'));
      if (!inputs.length) return;
      const source = PICK_SOURCES[kind];
      loads[source.url] = loads[source.url] || api('GET', API + source.url).catch(function () { return []; });
      loads[source.url].then(function (data) {
        const items = Array.isArray(data) ? data : [];
        const list = h('datalist', { id: 'pick-' + kind }, items.map(function (item) {
          return h('option', { value: item[source.key], label: source.label(item) });
        }));
        BODY.append(list);
        inputs.forEach(function (input) {
          input.setAttribute('list', list.id);
          function picked() {
            const value = input.value.trim();
            const item = items.filter(function (candidate) { return candidate[source.key] === value; })[0];
            if (item && handlers[kind]) handlers[kind](item, input);
          }
          input.addEventListener('input', picked);
          input.addEventListener('change', picked);
        });
      });
    });
  }

  // Fills the empty ones of these fields (id -> value): a pick never overwrites what the user typed.
  function fillEmpty(values) {
    Object.keys(values).forEach(function (id) {
      const input = byId(id);
      if (!input || input.value.trim() || !values[id]) return;
      if (input.dataset.date !== undefined) writeDate(input, values[id]); else input.value = values[id];
    });
  }

  // ---------------------------------------------------------------------------------------------------
  // Experts' addresses (issue 15): the gateway's MSSanté rule (proxymage_shared.mssante), checked at entry.

  const EXPERT_DOMAINS = LABELS.expert_domains || ['*.mssante.fr'];

  function addressAllowed(address, patterns) {
    const text = String(address || '').trim();
    const at = text.lastIndexOf('@');
    const local = text.slice(0, Math.max(at, 0));
    if (at <= 0 || local.indexOf('@') >= 0) return false;
    const domain = text.slice(at + 1).toLowerCase().replace(/\.+$/, '');
    const parts = domain.split('.');
    if (parts.length < 2 || parts.some(function (part) { return !part; })) return false;
    return patterns.some(function (raw) {
      const pattern = String(raw).trim().toLowerCase().replace(/\.+$/, '');
      if (pattern.slice(0, 2) === '*.') {
        const suffix = pattern.slice(1);
        return domain.length > suffix.length && domain.slice(-suffix.length) === suffix;
      }
      return pattern !== '' && domain === pattern;
    });
  }

  function mssanteProblem(input) {
    const value = input.value.trim();
    if (!value || addressAllowed(value, EXPERT_DOMAINS)) return '';
    return 'Adresse refusée : ce n\'est pas une adresse de messagerie sécurisée de santé (MSSanté). '
      + 'Domaines admis : ' + EXPERT_DOMAINS.join(', ');
  }

  function mssanteFields() {
    document.querySelectorAll('input[data-mssante]').forEach(function (input) {
      input.addEventListener('input', function () { if (!mssanteProblem(input)) fieldMessage(input, ''); });
      input.addEventListener('change', function () { fieldMessage(input, mssanteProblem(input)); });
    });
  }

  // ---------------------------------------------------------------------------------------------------
  // Pages

  const pages = {};

  pages['rcp-settings'] = function () {
    const form = byId('rcp-form');
    const rcpId = BODY.dataset.rcpId;
    // Picking a known RCP edits it: its current settings fill the form.
    pickLists({ rcp: function (rcp) {
      byId('title').value = rcp.title;
      byId('centre').value = rcp.centre;
      writeFilters('rcp', rcp.imaging);
    } });
    if (rcpId) {
      // Pre-fills the form when the gateway offers the RCP's current settings (not in the v1 contract).
      api('GET', API + path('rcps', rcpId)).then(function (rcp) {
        const settings = rcp && (rcp.settings || rcp);
        if (!settings) return;
        if (settings.title) byId('title').value = settings.title;
        if (settings.centre) byId('centre').value = settings.centre;
        if (settings.imaging) writeFilters('rcp', settings.imaging);
      }).catch(function () { /* a new RCP: nothing to pre-fill */ });
    }
    form.addEventListener('submit', async function (event) {
      event.preventDefault();
      if (!form.reportValidity()) return;
      const imaging = readFilters('rcp');
      if (!imaging) return;
      const id = byId('rcp_id').value.trim();
      const payload = { rcp_id: id, title: byId('title').value.trim(), centre: byId('centre').value.trim(), imaging: imaging };
      setStatus('Enregistrement…');
      try {
        await api('PUT', API + path('rcps', id, 'imaging-settings'), payload);
        setStatus('Paramètres imagerie enregistrés pour la RCP « ' + payload.title + ' ». '
          + 'Ils seront appliqués par défaut lors de l\'inscription d\'un dossier.', 'ok');
        showAlert('');
      } catch (error) {
        setStatus('');
        reportError(error);
      }
    });
  };

  function expertOf(role) {
    const name = byId(role + '-name');
    const email = byId(role + '-email');
    name.setCustomValidity('');
    email.setCustomValidity('');
    const nameValue = name.value.trim();
    const emailValue = email.value.trim();
    if (!nameValue && !emailValue) return { value: null };
    if (!nameValue) return { error: invalid(name, 'Indiquez le nom du médecin, ou videz aussi son adresse.') };
    if (!emailValue) return { error: invalid(email, 'Indiquez l\'adresse de messagerie sécurisée du médecin.') };
    const refused = mssanteProblem(email);
    if (refused) {
      fieldMessage(email, refused);
      email.reportValidity();
      return { error: null };
    }
    return { value: { name: nameValue, email: emailValue } };
  }

  function writeExpert(role, expert) {
    byId(role + '-name').value = expert ? expert.name || '' : '';
    byId(role + '-email').value = expert ? expert.email || '' : '';
  }

  function prefillQuery(meeting) {
    const query = new URLSearchParams();
    query.set('meeting_id', meeting.meeting_id);
    query.set('rcp_id', meeting.rcp_id || '');
    query.set('meeting_title', meeting.title || '');
    query.set('meeting_date', meeting.date || '');
    query.set('centre', meeting.centre || '');
    return query.toString();
  }

  pages['meeting-details'] = function () {
    const form = byId('meeting-form');
    const meetingId = BODY.dataset.meetingId;
    // The fieldset's other field: a known expert fills name and address together.
    function otherField(input, suffix) {
      return byId(input.closest('fieldset').dataset.role + suffix);
    }
    pickLists({
      meeting: function (meeting) {
        ['rcp_id', 'title', 'centre'].forEach(function (field) { byId(field).value = meeting[field] || ''; });
        writeDate(byId('date'), meeting.date || '');
        writeExpert('radiologist', meeting.on_call_radiologist);
        writeExpert('nuclear', meeting.on_call_nuclear_physician);
        ['radiologist', 'nuclear'].forEach(function (role) {
          const email = byId(role + '-email');
          fieldMessage(email, mssanteProblem(email));
        });
      },
      rcp: function (rcp) { fillEmpty({ title: rcp.title, centre: rcp.centre }); },
      'expert-name': function (expert, input) {
        const email = otherField(input, '-email');
        email.value = expert.email;
        fieldMessage(email, mssanteProblem(email));
      },
      'expert-email': function (expert, input) {
        otherField(input, '-name').value = expert.name;
        fieldMessage(input, '');
      },
    });
    if (meetingId) {
      // Pre-fills from what the gateway knows of the meeting, when it offers it.
      api('GET', API + path('meetings', meetingId)).then(function (meeting) {
        const details = meeting && (meeting.experts || meeting);
        if (!details) return;
        ['rcp_id', 'title', 'centre'].forEach(function (field) {
          if (details[field]) byId(field).value = details[field];
        });
        if (details.date) writeDate(byId('date'), details.date);
        if ('on_call_radiologist' in details) writeExpert('radiologist', details.on_call_radiologist);
        if ('on_call_nuclear_physician' in details) writeExpert('nuclear', details.on_call_nuclear_physician);
      }).catch(function () { /* unknown meeting: a blank form */ });
    }
    form.addEventListener('submit', async function (event) {
      event.preventDefault();
      if (!form.reportValidity()) return;
      const radiologist = expertOf('radiologist');
      if (radiologist.error === null) return;
      const nuclear = expertOf('nuclear');
      if (nuclear.error === null) return;
      if (!form.reportValidity()) return;
      const id = byId('meeting_id').value.trim();
      const payload = {
        meeting_id: id,
        rcp_id: byId('rcp_id').value.trim(),
        title: byId('title').value.trim(),
        date: readDate(byId('date')),
        centre: byId('centre').value.trim(),
        on_call_radiologist: radiologist.value,
        on_call_nuclear_physician: nuclear.value,
      };
      setStatus('Enregistrement…');
      try {
        await api('PUT', API + path('meetings', id, 'experts'), payload);
        setStatus('Experts d\'astreinte enregistrés pour la réunion du ' + frDate(payload.date) + '.', 'ok');
        showAlert('');
        byId('link-enrol').href = '/console/enrolments/new?' + prefillQuery(payload);
        byId('link-meeting').href = '/console/meetings/' + encodeURIComponent(id);
        byId('meeting-links').hidden = false;
      } catch (error) {
        setStatus('');
        reportError(error);
      }
    });
  };

  pages['enrolment-new'] = function () {
    const form = byId('enrolment-form');
    const consent = byId('consent');
    const imaging = byId('imagerie');
    const tab = selectionTab(null);
    let posted = null; // the enrolment payload last published (JSON), to re-publish a corrected identity
    let listening = null;
    // Picking a known meeting fills what the enrolment says of it; a known RCP, its title and centre if empty.
    pickLists({
      meeting: function (meeting) {
        ['rcp_id', 'centre'].forEach(function (field) { if (meeting[field]) byId(field).value = meeting[field]; });
        if (meeting.title) byId('meeting_title').value = meeting.title;
        if (meeting.date) writeDate(byId('meeting_date'), meeting.date);
      },
      rcp: function (rcp) { fillEmpty({ meeting_title: rcp.title, centre: rcp.centre }); },
    });

    function value(id) { return byId(id).value.trim(); }

    function payload() {
      return {
        enrolment_id: value('enrolment_id'),
        meeting_id: value('meeting_id'),
        rcp_id: value('rcp_id'),
        meeting_title: value('meeting_title'),
        meeting_date: readDate(byId('meeting_date')),
        centre: value('centre'),
        patient: {
          birth_name: value('birth_name'),
          used_name: value('used_name') || null,
          first_name: value('first_name'),
          birth_date: readDate(byId('birth_date')),
          sex: byId('sex').value,
        },
        consent: consent.checked,
        requested_by: { name: value('requested_by') },
      };
    }

    // Publishes the enrolment unless the same one already was; true when the gateway accepted it.
    async function ensureEnrolled() {
      const current = payload();
      const text = JSON.stringify(current);
      if (text === posted) return true;
      await api('POST', API + '/enrolments', current);
      posted = text;
      byId('enrolment_id').readOnly = true;
      if (current.consent && listening !== current.enrolment_id) {
        listening = current.enrolment_id;
        tab.listen(current.enrolment_id);
      }
      return true;
    }

    async function consentChanged() {
      imaging.hidden = !consent.checked;
      if (!consent.checked) return;
      if (!form.checkValidity()) {
        renderIdentity(byId('identity'), { status: 'pending' },
          'Complétez l\'identité du patient et la réunion, puis cliquez sur « Actualiser » pour rechercher ses examens.');
        form.reportValidity();
        return;
      }
      renderIdentity(byId('identity'), { status: 'pending' });
      try {
        await ensureEnrolled();
      } catch (error) {
        reportError(error);
      }
    }

    consent.addEventListener('change', consentChanged);

    // Ticking consent already published the enrolment: leaving through "Annuler" must withdraw it, or the
    // patient would stay on the meeting (issue 9). Nothing published yet: a plain link.
    byId('link-cancel').addEventListener('click', async function (event) {
      if (posted === null) return;
      event.preventDefault();
      const id = value('enrolment_id');
      if (!window.confirm('L\'inscription ' + id + ' a déjà été transmise à Proxymage. L\'annuler '
        + '(le patient est retiré de la réunion) ?')) return;
      try {
        await api('DELETE', API + path('enrolments', id));
        location.assign('/console/');
      } catch (error) {
        reportError(error);
      }
    });

    byId('btn-refresh').addEventListener('click', async function () {
      if (!form.reportValidity()) return;
      try {
        const before = posted;
        await ensureEnrolled();
        if (before === posted) {
          await api('POST', API + path('enrolments', value('enrolment_id'), 'refresh'));
          setStatus('Nouvelle recherche des examens demandée.', 'ok');
        } else {
          setStatus('Identité transmise : recherche des examens en cours.', 'ok');
        }
        tab.reload();
      } catch (error) {
        reportError(error);
      }
    });

    form.addEventListener('submit', async function (event) {
      event.preventDefault();
      if (!form.reportValidity()) return;
      setStatus('Enregistrement de l\'inscription…');
      try {
        await ensureEnrolled();
        const data = payload();
        if (data.consent) {
          await api('PUT', API + path('enrolments', data.enrolment_id, 'selection'), tab.selection());
        }
        setStatus('Inscription validée.', 'ok');
        location.assign('/console/meetings/' + encodeURIComponent(data.meeting_id)
          + '/patients/' + encodeURIComponent(data.enrolment_id));
      } catch (error) {
        setStatus('');
        reportError(error);
      }
    });
  };

  // The enrolment page (§5, §6 and CONTRACT v1.1): identity and consent, correctable (re-publishes the
  // enrolled event with the same id, the other fields kept), the Imaging tab, and "Annuler l'inscription"
  // (DELETE, after a confirmation dialog).
  pages.enrolment = function () {
    const form = byId('selection-form');
    const enrolmentId = BODY.dataset.enrolmentId;
    const tab = selectionTab(enrolmentId);
    const identityForm = byId('identity-form');
    const fields = byId('identity-fields');
    const consent = byId('patient-consent');
    const dialog = byId('withdraw-dialog');
    let current = null; // the enrolment as last read (null until the gateway knows its enrolled event)
    let edited = false; // the user changed the identity form: reloads no longer overwrite it
    let stepsOf = null; // the meeting whose previous/next links are shown

    function value(id) { return byId(id).value.trim(); }

    function fillIdentity(data) {
      const patient = data.patient;
      byId('patient-birth_name').value = patient.birth_name || '';
      byId('patient-used_name').value = patient.used_name || '';
      byId('patient-first_name').value = patient.first_name || '';
      writeDate(byId('patient-birth_date'), patient.birth_date || '');
      byId('patient-sex').value = patient.sex || '';
      consent.checked = data.consent === true;
    }

    // What POST /api/v1/enrolments needs besides the identity: kept from the enrolment as the gateway knows it.
    function republishable(data) {
      const meeting = data.meeting || {};
      return Boolean(data.patient && data.meeting_id && data.rcp_id && meeting.title && meeting.date
        && meeting.centre && data.requested_by);
    }

    function showIdentity(data) {
      const withdrawn = data.identity && data.identity.status === 'withdrawn';
      const usable = republishable(data);
      current = usable ? data : null;
      fields.disabled = !usable || lacks('enrol');
      byId('btn-identity').disabled = !usable;
      let hint = 'Identité transmise par le DCC. La corriger ici la transmet à nouveau : le patient est recherché '
        + 'à nouveau dans MIRC et les examens d\'un autre patient sont retirés.';
      if (!usable) hint = 'L\'identité de ce patient n\'est pas (encore) connue de Proxymage : elle ne peut pas être corrigée ici.';
      else if (withdrawn) hint = 'Inscription annulée. Pour rouvrir l\'inscription, enregistrer à nouveau l\'identité du patient.';
      byId('identity-form-hint').textContent = hint;
      if (usable && !edited) fillIdentity(data);
      byId('btn-withdraw').hidden = withdrawn;
      byId('btn-validate').disabled = withdrawn;
    }

    tab.onLoaded = function (data) {
      showIdentity(data);
      if (!data.meeting_id) return;
      byId('link-meeting').href = '/console/meetings/' + encodeURIComponent(data.meeting_id)
        + '/patients/' + encodeURIComponent(enrolmentId);
      if (stepsOf !== data.meeting_id) {
        stepsOf = data.meeting_id;
        enrolmentSteps(data.meeting_id, enrolmentId);
      }
      const meeting = data.meeting || {};
      byId('enrolment-meeting').textContent = (data.patient ? patientName(data) + ' — ' : '')
        + (meeting.title || 'Réunion ' + data.meeting_id) + (meeting.date ? ' du ' + frDate(meeting.date) : '');
    };
    tab.listen(enrolmentId);

    identityForm.addEventListener('input', function () { edited = true; });
    identityForm.addEventListener('change', function () { edited = true; });
    identityForm.addEventListener('submit', async function (event) {
      event.preventDefault();
      if (!current || !identityForm.reportValidity()) return;
      const meeting = current.meeting;
      const payload = {
        enrolment_id: enrolmentId,
        meeting_id: current.meeting_id,
        rcp_id: current.rcp_id,
        meeting_title: meeting.title,
        meeting_date: meeting.date,
        centre: meeting.centre,
        patient: {
          birth_name: value('patient-birth_name'),
          used_name: value('patient-used_name') || null,
          first_name: value('patient-first_name'),
          birth_date: readDate(byId('patient-birth_date')),
          sex: byId('patient-sex').value,
        },
        consent: consent.checked,
        requested_by: { name: current.requested_by },
      };
      if (current.consent === true && !payload.consent && !window.confirm('Sans consentement, aucune imagerie '
        + 'n\'est recherchée et les examens déjà récupérés sont retirés de la visionneuse. Enregistrer ?')) return;
      const status = byId('identity-status');
      status.textContent = 'Enregistrement de l\'identité…';
      status.className = 'status';
      try {
        await api('POST', API + '/enrolments', payload);
        edited = false;
        status.textContent = payload.consent
          ? 'Identité enregistrée : le patient est recherché à nouveau dans MIRC.'
          : 'Identité enregistrée, sans consentement : aucune imagerie n\'est recherchée.';
        status.className = 'status status-ok';
        showAlert('');
      } catch (error) {
        status.textContent = '';
        reportError(error);
      }
    });

    byId('btn-withdraw').addEventListener('click', function () {
      byId('withdraw-reason').value = '';
      dialog.showModal();
    });
    byId('withdraw-back').addEventListener('click', function () { dialog.close(); });
    byId('withdraw-confirm').addEventListener('click', async function (event) {
      const button = event.currentTarget;
      const reason = byId('withdraw-reason').value.trim();
      button.disabled = true;
      try {
        await api('DELETE', API + path('enrolments', enrolmentId), reason ? { reason: reason } : undefined);
        dialog.close();
        byId('identity-status').textContent = '';
        setStatus('Annulation de l\'inscription transmise : le patient est retiré de la réunion.', 'ok');
        showAlert('');
        tab.reload();
      } catch (error) {
        dialog.close();
        reportError(error);
      } finally {
        button.disabled = false;
      }
    });

    byId('btn-refresh').addEventListener('click', async function () {
      try {
        await api('POST', API + path('enrolments', enrolmentId, 'refresh'));
        setStatus('Nouvelle recherche des examens demandée.', 'ok');
      } catch (error) {
        reportError(error);
      }
    });
    form.addEventListener('submit', async function (event) {
      event.preventDefault();
      setStatus('Enregistrement de la sélection…');
      try {
        await api('PUT', API + path('enrolments', enrolmentId, 'selection'), tab.selection());
        setStatus('Sélection enregistrée : les examens sont récupérés pour la réunion.', 'ok');
        showAlert('');
      } catch (error) {
        setStatus('');
        reportError(error);
      }
    });
  };

  // ---------------------------------------------------------------------------------------------------
  // Déroulement (§7): a meeting's patients, and one patient's selected studies with their state

  function patientName(entry) {
    const patient = entry.patient;
    if (patient && (patient.birth_name || patient.first_name)) {
      const birth = (patient.birth_name || '').toUpperCase();
      const family = patient.used_name ? patient.used_name.toUpperCase() + ' (' + birth + ')' : birth;
      return family + ' ' + (patient.first_name || '');
    }
    return entry.enrolment_id;
  }

  function summaryText(entry) {
    const parts = [];
    const identity = entry.identity_status || (entry.identity && entry.identity.status);
    if (identity) parts.push(LABELS.identity[identity] || identity);
    const states = entry.studies && typeof entry.studies === 'object' ? entry.studies : null;
    // Withdrawn: its studies are being removed, a count of available ones would mislead.
    if (states && states.selected && identity !== 'withdrawn') {
      const available = (states.by_status && states.by_status.available) || 0;
      parts.push(available + '/' + plural(states.selected, 'examen disponible', 'examens disponibles'));
    }
    return parts.join(' — ');
  }

  // A decorative 18px icon (hidden from screen readers: its button carries the name) drawn by one SVG path.
  function icon(path) {
    const ns = 'http://www.w3.org/2000/svg';
    const svg = document.createElementNS(ns, 'svg');
    svg.setAttribute('viewBox', '0 0 24 24');
    svg.setAttribute('width', '18');
    svg.setAttribute('height', '18');
    svg.setAttribute('aria-hidden', 'true');
    svg.setAttribute('focusable', 'false');
    const shape = document.createElementNS(ns, 'path');
    shape.setAttribute('d', path);
    shape.setAttribute('fill', 'currentColor');
    svg.append(shape);
    return svg;
  }

  function trashIcon() {
    return icon('M9 3h6l1 2h4v2H4V5h4l1-2zm-3 6h12l-1 12H7L6 9zm4 2v8h2v-8h-2zm4 0v8h2v-8h-2z');
  }

  function studyCard(study, onRemove) {
    const retrieval = retrievalOf(study);
    const status = retrieval.status;
    const label = (study.description || 'Examen sans description') + (study.date ? ' du ' + frDate(study.date) : '');
    const state = h('div', { class: 'study-state' });
    const viewer = safeUrl(retrieval.viewer_url);
    if (status === 'available' && viewer) {
      append(state, h('a', {
        class: 'viewer-link', href: viewer, target: '_blank', rel: 'noopener noreferrer',
        'aria-label': 'Visuel disponible : ouvrir ' + label + ' dans la visionneuse (nouvel onglet)',
      }, 'Visuel disponible'));
    } else {
      append(state, h('p', { class: 'state-label', text: LABELS.retrieval[status] || status }));
      const planned = status === 'not_yet_available' && retrieval.next_attempt_at;
      if (LABELS.retrieval_detail[status] && !planned) {
        append(state, h('p', { class: 'hint', text: LABELS.retrieval_detail[status] }));
      }
      if (reasonText(retrieval)) append(state, h('p', { class: 'reason', text: reasonText(retrieval) }));
      const progress = retrieval.progress;
      if (status === 'retrieving' && progress && progress.total > 0) {
        const done = Math.min(progress.done, progress.total);
        append(state, h('div', { class: 'progress' },
          h('progress', { max: progress.total, value: done, 'aria-label': 'Progression de la récupération' }),
          h('span', { text: done + ' / ' + plural(progress.total, 'image', 'images') })));
      }
      if (planned) {
        append(state, h('p', { class: 'hint', text: 'Prochaine tentative automatique vers ' + frTime(retrieval.next_attempt_at) + '.' }));
      }
    }
    return h('li', { class: 'study state-' + status, 'data-uid': study.study_instance_uid },
      h('div', { class: 'study-head' },
        h('span', { class: 'date', text: frDate(study.date) }),
        h('span', { class: 'modalities', text: (study.modalities || []).join('/') }),
        h('span', { class: 'description', text: study.description || '' }),
        h('span', { class: 'pacs', text: study.pacs || '' })),
      state,
      h('button', {
        type: 'button', class: 'trash', title: 'Retirer cet examen', 'data-needs': 'select',
        'aria-label': 'Retirer l\'examen ' + label,
        onclick: function (event) { onRemove(study, label, event.currentTarget); },
      }, trashIcon()));
  }

  pages.meeting = function () {
    const meetingId = BODY.dataset.meetingId;
    const enrolmentId = BODY.dataset.enrolmentId;
    const list = byId('patients');
    const patients = patientList(list, meetingId, enrolmentId);

    const reloadPatients = serialised(async function () {
      let data;
      try {
        data = await api('GET', API + path('meetings', meetingId, 'enrolments'));
      } catch (error) {
        if (!(error instanceof ApiError && error.status === 404)) throw error;
        data = { enrolments: [] }; // not known yet: the list fills in as the DCC's events arrive
      }
      const entries = Array.isArray(data) ? data : (data && (data.enrolments || data.patients)) || [];
      const meeting = data && !Array.isArray(data) ? data : null;
      if (meeting && meeting.title) {
        byId('meeting-title').textContent = meeting.title + (meeting.date ? ' du ' + frDate(meeting.date) : '');
      }
      patients.show(entries);
      byId('patients-empty').hidden = entries.length > 0;
    });

    live(API + path('meetings', meetingId, 'events'), reloadPatients);
    reloadPatients();
    if (!enrolmentId) return;

    const removing = new Set();
    const lastStatus = new Map();
    async function remove(study, label, button) {
      if (!window.confirm('Retirer l\'examen « ' + label + ' » de la liste de la réunion ?')) return;
      button.disabled = true;
      removing.add(study.study_instance_uid);
      try {
        await api('DELETE', API + path('enrolments', enrolmentId, 'studies', study.study_instance_uid));
        showAlert('');
      } catch (error) {
        removing.delete(study.study_instance_uid);
        button.disabled = false;
        reportError(error);
      }
    }

    const reloadPatient = serialised(async function () {
      let data;
      try {
        data = await api('GET', API + path('enrolments', enrolmentId));
      } catch (error) {
        if (error instanceof ApiError && error.status === 404) {
          renderIdentity(byId('identity'), null, 'Inscription en cours d\'enregistrement par Proxymage…');
          return;
        }
        throw error;
      }
      renderIdentity(byId('identity'), data.identity, null, data.catalogue, data.withdrawal);
      byId('patient-name').textContent = data.patient ? patientName(data) : '';
      const expertise = data.expertise || {};
      const notes = (expertise.notifications || []).map(function (note) {
        return (LABELS.roles[note.role] || 'Expert') + ' : ' + (LABELS.notifications[note.status] || note.status)
          + (note.at ? ' le ' + frDateTime(note.at) : '')
          + (note.status !== 'sent' && reasonText(note) ? ' (' + reasonText(note) + ')' : '');
      });
      byId('expertise-summary').textContent = expertise.requested
        ? 'Demande d\'expertise' + (notes.length ? ' — ' + notes.join(' ; ') : ' en cours d\'envoi.')
        : '';
      const shown = (data.studies || []).filter(function (study) {
        return study.selected && retrievalOf(study).status !== 'removed';
      });
      const loaded = byId('loaded-studies');
      // Screen readers hear what changed (a study became viewable), not the whole list again.
      const news = shown.filter(function (study) {
        const status = retrievalOf(study).status;
        const before = lastStatus.get(study.study_instance_uid);
        lastStatus.set(study.study_instance_uid, status);
        return before !== undefined && before !== status && status === 'available';
      });
      if (news.length) {
        byId('announcer').textContent = news.map(function (study) {
          return 'Visuel disponible : ' + (study.description || 'examen') + (study.date ? ' du ' + frDate(study.date) : '');
        }).join(' ; ');
      }
      loaded.replaceChildren();
      shown.forEach(function (study) {
        const card = studyCard(study, remove);
        if (removing.has(study.study_instance_uid)) {
          card.querySelector('button.trash').disabled = true;
          append(card.querySelector('.study-state'), h('p', { class: 'hint', text: 'Retrait en cours…' }));
        }
        loaded.append(card);
      });
      const withdrawn = data.identity && data.identity.status === 'withdrawn';
      byId('loaded-empty').hidden = shown.length > 0 || withdrawn;
      showAlert('');
    });

    byId('btn-refresh').addEventListener('click', async function () {
      try {
        await api('POST', API + path('enrolments', enrolmentId, 'refresh'));
        reloadPatient();
      } catch (error) {
        reportError(error);
      }
    });
    live(API + path('enrolments', enrolmentId, 'events'), reloadPatient);
    reloadPatient();
  };

  function knownMeetings() {
    const box = byId('known-meetings');
    if (!box) return;
    // Lists the meetings the gateway knows, when it offers such a list (not in the v1 contract).
    api('GET', API + '/meetings').then(function (data) {
      const meetings = Array.isArray(data) ? data : (data && data.meetings) || [];
      if (!meetings.length) return;
      box.replaceChildren(h('h2', { text: 'Réunions connues de Proxymage' }), h('ul', { class: 'meeting-list' },
        meetings.map(function (meeting) {
          const title = (meeting.title || meeting.meeting_id) + (meeting.date ? ' du ' + frDate(meeting.date) : '');
          return h('li', null, h('a', { href: '/console/meetings/' + encodeURIComponent(meeting.meeting_id), text: title }));
        })));
    }).catch(function () { /* no list: the id field is enough */ });
  }

  // ---------------------------------------------------------------------------------------------------
  // The meeting day (issue 15): the meetings list (sort, centre, upcoming first), the meeting's patients
  // (birth date, sex, requesting doctor, imaging state; sort; previous/next), the printable sheet, and the
  // home page's meetings of the next 48 hours with studies not available.

  // Upper case without accents: the order of a paper list (É with E).
  function folded(text) {
    return String(text || '').normalize('NFD').replace(/[\u0300-\u036f]/g, '').toUpperCase();
  }

  // A reason after a full sentence starts a sentence of its own.
  function sentence(text) { return text ? text.charAt(0).toUpperCase() + text.slice(1) : ''; }

  function compareText(left, right) { return left < right ? -1 : left > right ? 1 : 0; }

  function localIsoDate(moment) {
    const pad = function (number) { return String(number).padStart(2, '0'); };
    return moment.getFullYear() + '-' + pad(moment.getMonth() + 1) + '-' + pad(moment.getDate());
  }

  function meetingLabel(meeting) {
    return (meeting.title || 'Réunion ' + meeting.meeting_id) + (meeting.date ? ' du ' + frDate(meeting.date) : '');
  }

  function meetingUrl(meetingId) { return '/console/meetings/' + encodeURIComponent(meetingId); }

  // Keeps the page's choices (sort, filter) in its address: a reload or a shared link shows the same list.
  function remembered(name, value, fallback) {
    const url = new URL(location.href);
    if (value === fallback) url.searchParams.delete(name); else url.searchParams.set(name, value);
    history.replaceState(null, '', url.pathname + url.search + url.hash);
  }

  // Upcoming meetings (today included) soonest first, past ones most recent first; or by title in both.
  function sortedMeetings(meetings, by, upcoming) {
    return meetings.slice().sort(function (left, right) {
      const byDate = compareText(left.date || '9999-12-31', right.date || '9999-12-31') * (upcoming ? 1 : -1);
      if (by === 'title') return compareText(folded(left.title), folded(right.title)) || byDate;
      return byDate || compareText(folded(left.title), folded(right.title));
    });
  }

  function meetingRow(meeting) {
    return h('tr', { 'data-meeting-id': meeting.meeting_id },
      h('td', { text: meeting.date ? frDate(meeting.date) : 'Date inconnue' }),
      h('td', null, h('a', { href: meetingUrl(meeting.meeting_id), text: meeting.title || 'Réunion ' + meeting.meeting_id,
        'aria-label': meetingLabel(meeting) })),
      h('td', { text: meeting.centre || '' }),
      h('td', null, h('a', { href: meetingUrl(meeting.meeting_id) + '/fiche', text: 'Fiche',
        'aria-label': 'Fiche imprimable : ' + meetingLabel(meeting) })));
  }

  function meetingsPage() {
    const sort = byId('meetings-sort');
    const centre = byId('meetings-centre');
    const query = new URLSearchParams(location.search);
    let meetings = [];
    if (query.get('tri') === 'title') sort.value = 'title';

    function render() {
      const today = localIsoDate(new Date());
      const shown = meetings.filter(function (meeting) { return !centre.value || meeting.centre === centre.value; });
      const upcoming = shown.filter(function (meeting) { return !meeting.date || meeting.date >= today; });
      const past = shown.filter(function (meeting) { return meeting.date && meeting.date < today; });
      byId('meetings-upcoming').querySelector('tbody')
        .replaceChildren(...sortedMeetings(upcoming, sort.value, true).map(meetingRow));
      byId('meetings-past').querySelector('tbody')
        .replaceChildren(...sortedMeetings(past, sort.value, false).map(meetingRow));
      byId('meetings-upcoming').hidden = upcoming.length === 0;
      byId('upcoming-empty').hidden = upcoming.length > 0;
      byId('meetings-past').hidden = past.length === 0;
      byId('past-count').textContent = '(' + past.length + ')';
    }

    sort.addEventListener('change', function () { remembered('tri', sort.value, 'date'); render(); });
    centre.addEventListener('change', function () { remembered('centre', centre.value, ''); render(); });
    api('GET', API + '/meetings').then(function (data) {
      meetings = Array.isArray(data) ? data : [];
      const centres = Array.from(new Set(meetings.map(function (meeting) { return meeting.centre; })
        .filter(Boolean))).sort(function (left, right) { return compareText(folded(left), folded(right)); });
      centre.replaceChildren(h('option', { value: '', text: 'Tous les centres' }),
        ...centres.map(function (name) { return h('option', { value: name, text: name }); }));
      if (centres.indexOf(query.get('centre')) >= 0) centre.value = query.get('centre');
      byId('meetings-loading').hidden = true;
      render();
    }).catch(reportError);
  }

  // "Née le 12/04/1956 · Féminin": what the room checks before looking at the images.
  function identityLine(patient) {
    if (!patient) return '';
    const born = patient.sex === 'F' ? 'Née' : patient.sex === 'M' ? 'Né' : 'Né(e)';
    return born + ' le ' + frDate(patient.birth_date) + ' · ' + (LABELS.sexes[patient.sex] || patient.sex);
  }

  const PATIENT_SORTS = {
    inscription: null, // the gateway's order
    nom: function (entry) { return [folded(entry.patient && entry.patient.birth_name), folded(entry.patient && entry.patient.first_name)]; },
    etat: function (entry) {
      const rank = LABELS.imaging_state_order.indexOf(entry.imaging_state);
      return [String(rank < 0 ? 99 : rank).padStart(2, '0'), folded(patientName(entry))];
    },
    demandeur: function (entry) {
      return [entry.requested_by ? '0' + folded(entry.requested_by) : '1', folded(patientName(entry))];
    },
  };

  function sortedPatients(entries, by) {
    const key = PATIENT_SORTS[by];
    if (!key) return entries.slice();
    return entries.slice().sort(function (left, right) {
      const a = key(left);
      const b = key(right);
      for (let index = 0; index < a.length; index += 1) {
        const order = compareText(a[index], b[index]);
        if (order) return order;
      }
      return 0;
    });
  }

  // "← Patient précédent · Patient 2 sur 5 · Patient suivant →" on a patient's page (`urlOf`: its address).
  function showPatientSteps(ordered, enrolmentId, urlOf) {
    const steps = byId('patient-steps');
    if (!steps) return;
    const index = ordered.findIndex(function (entry) { return entry.enrolment_id === enrolmentId; });
    steps.hidden = index < 0;
    if (index < 0) return;
    [['link-previous', ordered[index - 1]], ['link-next', ordered[index + 1]]].forEach(function (pair) {
      const link = byId(pair[0]);
      link.hidden = !pair[1];
      if (pair[1]) {
        link.href = urlOf(pair[1].enrolment_id);
        link.title = patientName(pair[1]);
      }
    });
    byId('patient-position').textContent = 'Patient ' + (index + 1) + ' sur ' + ordered.length;
  }

  // The enrolment page's previous/next: the meeting's patients in the order the meeting's list had (`?tri=`).
  function enrolmentSteps(meetingId, enrolmentId) {
    const by = new URLSearchParams(location.search).get('tri');
    const sort = by && by in PATIENT_SORTS ? by : 'inscription';
    api('GET', API + path('meetings', meetingId, 'enrolments')).then(function (data) {
      const ordered = sortedPatients((data && data.enrolments) || [], sort);
      showPatientSteps(ordered, enrolmentId, function (id) {
        return '/console/enrolments/' + encodeURIComponent(id) + (sort === 'inscription' ? '' : '?tri=' + sort);
      });
    }).catch(function () { /* no list: no previous/next */ });
  }

  // The meeting's patient list and, on a patient's page, the links to the previous and next patients
  // (in the list's order, which the links carry along as `?tri=`).
  function patientList(list, meetingId, enrolmentId) {
    const sort = byId('patients-sort');
    const wanted = new URLSearchParams(location.search).get('tri');
    if (wanted && wanted in PATIENT_SORTS) sort.value = wanted;
    let entries = [];

    function patientUrl(id) {
      return meetingUrl(meetingId) + '/patients/' + encodeURIComponent(id)
        + (sort.value === 'inscription' ? '' : '?tri=' + encodeURIComponent(sort.value));
    }

    function render() {
      const ordered = sortedPatients(entries, sort.value);
      list.replaceChildren();
      ordered.forEach(function (entry) {
        const state = entry.imaging_state;
        list.append(h('li', { 'data-enrolment-id': entry.enrolment_id, 'data-imaging-state': state || null },
          h('a', { href: patientUrl(entry.enrolment_id), 'aria-current': entry.enrolment_id === enrolmentId ? 'page' : null },
            h('span', { class: 'patient-name', text: patientName(entry) }),
            entry.patient ? h('span', { class: 'patient-identity', text: identityLine(entry.patient) }) : null,
            entry.requested_by ? h('span', { class: 'patient-requester', text: 'Demandeur : ' + entry.requested_by }) : null,
            h('span', { class: 'patient-summary', text: summaryText(entry) }),
            state ? h('span', { class: 'imaging-state imaging-' + state, text: LABELS.imaging_states[state] || state }) : null)));
      });
      showPatientSteps(ordered, enrolmentId, patientUrl);
    }

    sort.addEventListener('change', function () { remembered('tri', sort.value, 'inscription'); render(); });
    return { show: function (data) { entries = data; render(); } };
  }

  function sheetStudyRow(study) {
    const label = LABELS.retrieval[study.status] || study.status;
    const detail = study.status === 'available' ? '' : (study.reason_text || LABELS.retrieval_detail[study.status] || '');
    return h('tr', { class: 'state-' + study.status },
      h('td', { text: frDate(study.date) }),
      h('td', { text: (study.modalities || []).join('/') }),
      h('td', { text: study.description || 'Examen sans description' }),
      h('td', { text: study.pacs || '' }),
      h('td', { class: 'state' }, h('strong', { text: label }), detail ? ' ' + sentence(detail) : ''));
  }

  function sheetPatient(patient) {
    const facts = [identityLine(patient.patient), 'Médecin demandeur : ' + (patient.requested_by || 'non renseigné')]
      .filter(Boolean).join(' — ');
    const section = h('section', { class: 'sheet-patient', 'data-enrolment-id': patient.enrolment_id },
      h('h2', { text: patientName(patient) }),
      h('p', { class: 'sheet-facts', text: facts }),
      h('p', { class: 'sheet-facts', text: 'Identité : ' + (LABELS.identity[patient.identity_status] || patient.identity_status)
        + ' — Imagerie : ' + (LABELS.imaging_states[patient.imaging_state] || patient.imaging_state) }));
    if (!patient.studies.length) {
      append(section, h('p', { class: 'hint', text: 'Aucun examen sélectionné.' }));
      return section;
    }
    append(section, h('table', { class: 'studies sheet-studies' },
      h('thead', null, h('tr', null, ['Date', 'Modalité', 'Examen', 'PACS', 'État'].map(function (name) {
        return h('th', { scope: 'col', text: name });
      }))),
      h('tbody', null, patient.studies.map(sheetStudyRow))));
    return section;
  }

  pages['meeting-sheet'] = function () {
    const meetingId = BODY.dataset.meetingId;
    byId('btn-print').addEventListener('click', function () { window.print(); });
    const reload = serialised(async function () {
      const sheet = await api('GET', API + path('meetings', meetingId, 'sheet'));
      byId('sheet-title').textContent = meetingLabel(sheet);
      const experts = [
        [LABELS.roles.radiologist, sheet.on_call_radiologist],
        [LABELS.roles.nuclear_physician, sheet.on_call_nuclear_physician],
      ].map(function (pair) { return pair[0] + ' : ' + (pair[1] ? pair[1].name : 'aucun'); });
      byId('sheet-meta').textContent = [sheet.centre ? 'Centre : ' + sheet.centre : ''].concat(experts)
        .filter(Boolean).join(' — ');
      byId('sheet-count').textContent = plural(sheet.patients.length, 'patient inscrit', 'patients inscrits')
        + ' — fiche éditée le ' + frDateTime(new Date().toISOString());
      byId('sheet-patients').replaceChildren(...sheet.patients.map(sheetPatient));
      byId('sheet-empty').hidden = sheet.patients.length > 0;
      showAlert('');
    });
    live(API + path('meetings', meetingId, 'events'), reload);
    reload();
  };

  function gapStudy(study) {
    const label = LABELS.retrieval[study.status] || study.status;
    const what = (study.description || 'Examen sans description') + (study.date ? ' du ' + frDate(study.date) : '');
    return h('li', { class: 'state-' + study.status },
      h('span', { class: 'gap-study', text: what }), ' — ', h('span', { class: 'state-label', text: label }),
      study.reason_text ? h('span', { class: 'reason', text: ' ' + sentence(study.reason_text) }) : null);
  }

  // The home page's block (read route `GET /api/v1/imaging-gaps`: the gateway gathers the reasons once).
  function imagingGaps() {
    const box = byId('gaps-list');
    if (!box) return;
    async function load() {
      const gaps = await api('GET', API + '/imaging-gaps?days=2');
      box.replaceChildren(...gaps.map(function (gap) {
        return h('li', { 'data-meeting-id': gap.meeting_id },
          h('a', { class: 'gap-meeting', href: meetingUrl(gap.meeting_id), text: meetingLabel(gap) }),
          gap.centre ? h('span', { class: 'hint', text: ' — ' + gap.centre }) : null,
          h('ul', null, gap.patients.map(function (patient) {
            return h('li', null,
              h('a', { href: meetingUrl(gap.meeting_id) + '/patients/' + encodeURIComponent(patient.enrolment_id),
                text: patientName(patient) }),
              h('ul', null, patient.studies.map(gapStudy)));
          })));
      }));
      byId('gaps-loading').hidden = true;
      byId('gaps-empty').hidden = gaps.length > 0;
    }
    const reload = serialised(load);
    reload();
    // Studies arrive all day long: the block follows without a reload of the page.
    setInterval(reload, 60000);
  }

  pages.home = function () { knownMeetings(); pickLists(); imagingGaps(); };
  pages.meetings = function () { meetingsPage(); pickLists(); };

  dateFields();
  mssanteFields();
  // ---------------------------------------------------------------------------------------------------
  // Rights (issue 15): what the caller's role may do, from GET /api/v1/me. console.css hides every element
  // marked data-needs="<right>" (in the templates and in the rows built here) unless the body's data-rights
  // lists that right. Links to the pages of a right are marked here by their address, and the refresh buttons
  // by id. The gateway refuses anyway (403): this spares people buttons that cannot work for them.
  const NEEDS_BY_LINK = [
    [/^\/console\/rcps\//, 'settings'],
    [/^\/console\/meetings\/(new|[^/?]+\/details)(\?|$)/, 'settings'],
    [/^\/console\/enrolments\/new(\?|$)/, 'enrol'],
  ];
  const NEEDS_BY_ID = { 'btn-refresh': 'enrol' };
  // The caller's rights once GET /api/v1/me answered (null before: nothing is locked, the gateway refuses anyway).
  const granted = { rights: null };

  function lacks(right) { return granted.rights !== null && granted.rights.indexOf(right) < 0; }

  // Fields a role may look at but not change (the identity for `enrol`, the studies' boxes for `select`) are
  // disabled, so that nobody edits what cannot be saved.
  function lockReadOnly() {
    document.querySelectorAll('[data-editable-by]').forEach(function (element) {
      if (lacks(element.dataset.editableBy)) element.disabled = true;
    });
  }

  function applyRights() {
    document.querySelectorAll('a[href]').forEach(function (link) {
      const rule = NEEDS_BY_LINK.find(function (candidate) { return candidate[0].test(link.getAttribute('href')); });
      if (rule) (link.closest('li') || link).dataset.needs = rule[1];
    });
    Object.keys(NEEDS_BY_ID).forEach(function (id) {
      if (byId(id)) byId(id).dataset.needs = NEEDS_BY_ID[id];
    });
    api('GET', API + '/me').then(function (me) {
      BODY.dataset.rights = me.rights.join(' ');
      granted.rights = me.rights;
      lockReadOnly();
      const who = byId('who');
      if (who) {
        who.textContent = me.name + ' — ' + me.role_label;
        who.hidden = false;
      }
    }).catch(function () { BODY.dataset.rights = 'read'; });
  }

  // An enrolment's audit trail (right "audit"): GET /api/v1/enrolments/{id}/audit, newest first.
  const AUDIT_ACTIONS = {
    read_enrolment: 'Consultation de la fiche',
    enrol: 'Inscription ou correction de l\'identité',
    withdraw: 'Annulation de l\'inscription',
    select: 'Sélection des examens',
    remove_study: 'Retrait d\'un examen',
    refresh: 'Nouvelle recherche des examens',
    view_study: 'Ouverture dans la visionneuse',
    read_audit: 'Consultation du journal',
    forbidden_settings: 'Paramétrage refusé (rôle sans ce droit)',
    forbidden_enrol: 'Inscription ou annulation refusée (rôle sans ce droit)',
    forbidden_select: 'Sélection refusée (rôle sans ce droit)',
    forbidden_audit: 'Consultation du journal refusée (rôle sans ce droit)',
  };
  const AUDIT_ROLES = { dcc: 'DCC', viewer: 'Lecture (machine)', '3c': '3C', medecin: 'Médecin', lecture: 'Lecture seule' };

  function auditTrail() {
    const button = byId('btn-audit');
    if (!button) return;
    button.addEventListener('click', async function () {
      try {
        const data = await api('GET', API + path('enrolments', BODY.dataset.enrolmentId, 'audit'));
        const rows = data.entries.map(function (entry) {
          const result = entry.status < 300 ? 'Fait' : entry.status === 403 ? 'Refusé' : 'Échec (' + entry.status + ')';
          return h('tr', null,
            h('td', { text: frDateTime(entry.at) }),
            h('td', { text: entry.who + (entry.subject ? ' (' + entry.subject + ')' : '') }),
            h('td', { text: AUDIT_ROLES[entry.role] || entry.role }),
            h('td', { text: AUDIT_ACTIONS[entry.action] || entry.action }),
            h('td', { text: result }));
        });
        byId('audit-table').tBodies[0].replaceChildren(...rows);
        byId('audit-table').hidden = rows.length === 0;
        byId('audit-empty').hidden = rows.length > 0;
        button.textContent = 'Actualiser le journal';
      } catch (error) {
        reportError(error);
      }
    });
  }

  if (BODY.dataset.page !== 'login') applyRights();
  if (BODY.dataset.page === 'enrolment') auditTrail();

  const start = pages[BODY.dataset.page];
  if (start) start();
}());
