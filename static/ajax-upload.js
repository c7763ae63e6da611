/*
 * The /ajax page: drag and drop or pick files, upload them in ONE request
 * (so cancelling leaves nothing on the server), a <progress> per file and one
 * overall, then the list of stored files with links.
 *
 * Before sending, the page checks each file's size and type, the count and
 * the total against the limits the server publishes in #sessup-limits (the
 * server still judges).  Every refusal is a short translated message keyed by
 * the server's error code (#sessup-messages); a refused file's bar goes back
 * to empty and says it was not stored.
 *
 * The "Resumable (tus)" switch sends each file in chunks through
 * static/sessup-tus.js instead, one file after the other, with the same bars
 * and results.  A large file (at least PARALLEL chunks) goes in PARALLEL
 * parts at once, joined by the server, when the server offers it.  Such an
 * upload survives a page reload (choose the same file again: it, or each of
 * its parts, continues at the server's offset) and a lost connection
 * (retried); cancelling aborts the chunks in flight and deletes the
 * unfinished upload.
 */
(function () {
  'use strict';
  var form = document.getElementById('ajax-upload');
  if (!form) { return; }
  var input = document.getElementById('inputFile');
  var dropzone = document.getElementById('dropzone');
  var startButton = document.getElementById('start');
  var cancelButton = document.getElementById('cancel');
  var overall = document.getElementById('overall');
  var overallText = document.getElementById('overall-text');
  var queue = document.getElementById('queue');
  var statusBox = document.getElementById('status');
  var errorBox = document.getElementById('error');
  var results = document.getElementById('results');
  var modeSwitch = document.getElementById('resumable');
  var messages = JSON.parse(document.getElementById('sessup-messages').textContent || '{}');
  var picked = [];
  var current = null;
  var probing = 0;  // generation of the offset look-ups of the picked files
  var MODE_KEY = 'sessup-ajax-mode';
  var PARALLEL = 4;  // parts of a large file sent at once in the resumable mode

  function fill(text, values) {
    Object.keys(values || {}).forEach(function (name) { text = text.split('${' + name + '}').join(values[name]); });
    return text;
  }

  function t(key, values) {
    return fill(messages[key] || key, values);
  }

  // One size format with the server's (format_size): exact bytes below 1 KiB,
  // else KiB/MiB/GiB with at most two decimals.
  function formatSize(size) {
    if (size < 1024) { return fill(size === 1 ? messages.bytes_one : messages.bytes_other, {count: size}); }
    var value = size;
    var units = ['KiB', 'MiB', 'GiB'];
    for (var i = 0; i < units.length; i++) {
      value /= 1024;
      if (value < 1024 || i === units.length - 1) { break; }
    }
    return value.toFixed(2).replace(/0+$/, '').replace(/\.$/, '') + ' ' + units[i];
  }

  function allowedText(limits) {
    return (limits.allowed_extensions || []).map(function (e) { return '.' + e; })
      .concat(limits.allowed_types || []).join(', ');
  }

  // The short message for a refusal: by the server's error code and details.
  function errorText(code, details, status) {
    details = details || {};
    var errors = messages.errors || {};
    if (code === 'file_rejected' && !details.filename) { code = 'file_rejected_unnamed'; }
    var template = errors[code] || (status === 413 ? errors.body_too_large : (messages.unreadable || code));
    var limit = details.limit;
    if (typeof limit === 'number' && (code === 'file_too_large' || code === 'total_too_large')) { limit = formatSize(limit); }
    return fill(template, {name: details.filename || '?', limit: limit, status: status || '',
                           allowed: allowedText(details)});
  }

  // A refusal of the resumable endpoint, by its status (its text is for developers).
  function tusErrorText(err, file) {
    var l = limits();
    if (err.status === 413) { return errorText('file_too_large', {filename: file.name, limit: l.max_file_size}); }
    if (err.status === 415) {
      return errorText('type_not_allowed', {filename: file.name, allowed_extensions: l.allowed_extensions,
                                            allowed_types: l.allowed_types});
    }
    if (err.status === 403) { return errorText('csrf_token_invalid', {}, 403); }
    if (err.status === 422) { return errorText('file_rejected', {filename: file.name}, 422); }
    if (err.status === 429) { return errorText('quota_exceeded', {}, 429); }
    if (err.status === 503) { return errorText('store_unavailable', {}, 503); }
    if (err.status === 507) { return errorText('insufficient_storage', {}, 507); }
    return errorText('failed', {}, err.status);
  }

  // Read at each upload (not once): the server's limits as the page has them.
  function limits() {
    var element = document.getElementById('sessup-limits');
    try { return JSON.parse(element ? element.textContent : '{}') || {}; } catch (e) { return {}; }
  }

  function extensionOf(name) {
    var dot = name.lastIndexOf('.');
    return dot > 0 ? name.slice(dot + 1).toLowerCase() : '';
  }

  function typeAllowed(type, allowed) {
    if (!allowed.length) { return true; }
    type = (type || '').toLowerCase();
    return allowed.some(function (a) { return a === type || (/\/\*$/.test(a) && type.indexOf(a.slice(0, -1)) === 0); });
  }

  // [{index, message}] for what the server would refuse; index -1: the whole batch.
  function precheck(files) {
    var l = limits();
    var problems = [];
    var exts = l.allowed_extensions || [];
    var types = l.allowed_types || [];
    files.forEach(function (file, index) {
      var details = {filename: file.name, allowed_extensions: exts, allowed_types: types};
      if (typeof l.max_file_size === 'number' && file.size > l.max_file_size) {
        problems.push({index: index, message: errorText('file_too_large', {filename: file.name, limit: l.max_file_size})});
      } else if ((exts.length && exts.indexOf(extensionOf(file.name)) < 0) || !typeAllowed(file.type, types)) {
        problems.push({index: index, message: errorText('type_not_allowed', details)});
      }
    });
    if (typeof l.max_files === 'number' && files.length > l.max_files) {
      problems.push({index: -1, message: errorText('too_many_files', {limit: l.max_files})});
    }
    var total = files.reduce(function (a, f) { return a + f.size; }, 0);
    if (typeof l.max_total_size === 'number' && total > l.max_total_size) {
      problems.push({index: -1, message: errorText('total_too_large', {limit: l.max_total_size})});
    }
    return problems;
  }

  // A file that was not stored: empty bar, "Not stored", and the reason when it is its own.
  function markFailed(file, reason) {
    if (!file.row) { return; }
    setProgress(file.row.bar, null, 0);
    file.row.item.classList.add('failed');
    file.row.text.textContent = t('not_stored');
    if (reason) {
      var why = document.createElement('span');
      why.className = 'file-error';
      why.textContent = reason;
      file.row.item.appendChild(why);
    }
  }

  function setProgress(bar, label, fraction) {
    var percent = Math.max(0, Math.min(100, Math.round(fraction * 1000) / 10));
    bar.value = percent;
    bar.setAttribute('aria-valuenow', String(percent));
    bar.setAttribute('aria-valuetext', percent + '%');
    bar.textContent = percent + '%';
    if (label) { label.textContent = percent + '%'; }
  }

  function showError(text) {
    errorBox.textContent = text;
    errorBox.hidden = !text;
  }

  function resumable() {
    return !!(modeSwitch && modeSwitch.checked && window.SessupTus);
  }

  function render() {
    queue.textContent = '';
    picked.forEach(function (file, index) {
      var item = document.createElement('li');
      var name = document.createElement('span');
      name.className = 'name';
      name.textContent = file.name;
      name.title = file.name + ' (' + formatSize(file.size) + ')';
      name.id = 'file-name-' + index;
      var bar = document.createElement('progress');
      bar.max = 100;
      bar.value = 0;
      bar.className = 'file-progress';
      bar.setAttribute('aria-labelledby', name.id);
      bar.setAttribute('aria-valuemin', '0');
      bar.setAttribute('aria-valuemax', '100');
      bar.setAttribute('aria-valuenow', '0');
      var text = document.createElement('span');
      text.className = 'progress-text';
      text.setAttribute('aria-hidden', 'true');
      text.textContent = '0%';
      item.appendChild(name);
      item.appendChild(bar);
      item.appendChild(text);
      file.row = {item: item, bar: bar, text: text};
      queue.appendChild(item);
    });
  }

  function pick(fileList) {
    if (current) { return; }
    picked = Array.prototype.slice.call(fileList || []);
    showError('');
    statusBox.textContent = '';
    setProgress(overall, overallText, 0);
    render();
    if (resumable()) { probe(); }
  }

  // Resumable mode: show how far the server already has each picked file
  // (an upload remembered from before a reload), so the bars start there.
  function probe() {
    var generation = ++probing;
    var files = picked;
    var sum = files.reduce(function (a, f) { return a + f.size; }, 0);
    var known = 0;
    files.forEach(function (file) {
      window.SessupTus.offsetOf(file).then(function (offset) {
        if (generation !== probing || current || !offset || !file.row) { return; }
        setProgress(file.row.bar, file.row.text, offset / file.size);
        file.row.item.classList.add('resumable');
        known += offset;
        if (sum) { setProgress(overall, overallText, known / sum); }
      });
    });
  }

  function switchMode() {
    try { window.localStorage.setItem(MODE_KEY, modeSwitch.checked ? 'tus' : 'multipart'); } catch (e) { /* private mode */ }
    if (current) { return; }
    probing++;
    setProgress(overall, overallText, 0);
    render();
    if (resumable()) { probe(); }
  }

  function busy(on) {
    startButton.disabled = on;
    cancelButton.disabled = !on;
    input.disabled = on;
    if (modeSwitch) { modeSwitch.disabled = on; }
    form.setAttribute('aria-busy', on ? 'true' : 'false');
  }

  function addResult(file, before) {
    var item = document.createElement('li');
    var link = document.createElement('a');
    link.href = file.url;
    link.className = 'result-link';
    link.textContent = file.filename;
    link.setAttribute('download', file.filename);
    var meta = document.createElement('code');
    meta.textContent = ' ' + formatSize(file.size) + ' · sha256 ' + file.sha256;
    item.appendChild(link);
    item.appendChild(meta);
    results.insertBefore(item, before === undefined ? results.firstChild : before);
  }

  function upload() {
    if (current) { return; }
    if (!picked.length) { showError(t('nothing')); return; }
    var problems = precheck(picked);
    if (problems.length) {
      // Nothing is sent: say why, beside each file at fault and above the list.
      render();
      problems.forEach(function (p) { if (p.index >= 0) { markFailed(picked[p.index], p.message); } });
      showError(problems.map(function (p) { return p.message; }).join(' '));
      statusBox.textContent = '';
      return;
    }
    if (resumable()) { uploadResumable(); return; }
    var sizes = picked.map(function (f) { return f.size; });
    var sum = sizes.reduce(function (a, b) { return a + b; }, 0);
    showError('');
    busy(true);
    statusBox.textContent = t('uploading', {name: picked.length === 1 ? picked[0].name : t('files', {count: picked.length})});
    current = sessupUpload({
      url: form.getAttribute('data-upload-url'),
      files: picked,
      fieldName: form.getAttribute('data-field') || 'inputFile',
      csrfUrl: form.getAttribute('data-csrf-url') || undefined,
      dataType: 'json',
      progress: function (loaded, total) {
        if (!total) { return; }
        var fraction = loaded / total;
        setProgress(overall, overallText, fraction);
        // Files travel in order inside the one body: share its progress out.
        var sent = fraction * sum;
        picked.forEach(function (file, i) {
          var part = file.size ? Math.max(0, Math.min(1, sent / file.size)) : (sent >= 0 ? 1 : 0);
          sent -= file.size;
          setProgress(file.row.bar, file.row.text, part);
        });
      },
      success: function (data) {
        setProgress(overall, overallText, 1);
        picked.forEach(function (file) { setProgress(file.row.bar, file.row.text, 1); file.row.item.classList.add('done'); });
        // Newest batch first, each batch in the order the files were sent.
        (data.files || []).slice().reverse().forEach(function (file) { addResult(file); });
        statusBox.textContent = t('done');
      },
      error: function (xhr, status, message, info) {
        if (status === 'abort') {
          picked.forEach(function (file) { markFailed(file); });
          statusBox.textContent = t('cancelled');
          return;
        }
        // Nothing of the request was stored (all or nothing): every bar back to empty.
        var reason;
        if (!xhr || !xhr.status) {
          reason = t('network');
        } else if (info && info.code) {
          reason = errorText(info.code, info, xhr.status);
        } else {
          // Not the add-on's answer: a proxy's or the server's own (its bare 413 page).
          reason = errorText(xhr.status === 413 ? 'body_too_large' : 'failed', {}, xhr.status);
        }
        var culprit = info && info.filename ? info.filename : null;
        picked.forEach(function (file) { markFailed(file, culprit !== null && file.name === culprit ? reason : ''); });
        setProgress(overall, overallText, 0);
        statusBox.textContent = '';
        showError(reason);
      },
      complete: function () {
        current = null;
        busy(false);
        picked = [];
        input.value = '';
      }
    });
  }

  function finishBatch() {
    current = null;
    busy(false);
    picked = [];
    input.value = '';
  }

  // One file after the other through tus; the same bars, results and cancel.
  function uploadResumable() {
    var files = picked.slice();
    var sum = files.reduce(function (a, f) { return a + f.size; }, 0);
    var endpoint = modeSwitch.getAttribute('data-tus-endpoint') || '/files/';
    var chunkSize = parseInt(modeSwitch.getAttribute('data-chunk-size') || '', 10) || undefined;
    var parallel = parseInt(modeSwitch.getAttribute('data-tus-parallel') || '', 10) || PARALLEL;
    var anchor = results.firstChild;  // this batch's results go above the older ones, in order
    var finishedBytes = 0;
    var index = 0;
    var batch = {upload: null, cancelled: false};
    probing++;
    showError('');
    busy(true);

    function overallAt(sent) {
      setProgress(overall, overallText, sum ? (finishedBytes + sent) / sum : index / files.length);
    }

    function failRest(from) {
      files.slice(from).forEach(function (file) { file.row.item.classList.add('failed'); });
    }

    current = {
      abort: function () {
        if (batch.cancelled) { return; }
        batch.cancelled = true;
        cancelButton.disabled = true;
        var stopping = batch.upload ? batch.upload.abort(true) : Promise.resolve();
        stopping.then(function () {
          failRest(index);
          statusBox.textContent = t('cancelled_resumable');
          finishBatch();
        }, function (err) {
          failRest(index);
          statusBox.textContent = '';
          showError(err.status ? tusErrorText(err, files[index] || {name: '?'})
                               : t('failed', {name: files[index] ? files[index].name : '', error: t('network')}));
          finishBatch();
        });
      }
    };

    function next() {
      if (batch.cancelled) { return; }
      if (index >= files.length) {
        overallAt(0);
        statusBox.textContent = t('done');
        finishBatch();
        return;
      }
      var file = files[index];
      statusBox.textContent = t('uploading', {name: file.name});
      var up = new window.SessupTus.Upload(file, {
        endpoint: endpoint,
        chunkSize: chunkSize,
        parallelUploads: parallel,
        onResume: function (offset, total) {
          var percent = Math.round((total ? offset / total : 1) * 1000) / 10;
          statusBox.textContent = t('resuming', {name: file.name, percent: percent + '%'});
        },
        onProgress: function (sent, total) {
          setProgress(file.row.bar, file.row.text, total ? sent / total : 1);
          overallAt(sent);
        },
        onRetry: function (err, attempt) {
          form.setAttribute('data-tus-retries', String(attempt));
          statusBox.textContent = t('retrying', {attempt: attempt});
        }
      });
      batch.upload = up;
      up.start().then(function (result) {
        // Stored on the server even if Cancel came just too late: show it.
        setProgress(file.row.bar, file.row.text, 1);
        file.row.item.classList.add('done');
        addResult(result, anchor);
        finishedBytes += file.size;
        index++;
        next();
      }, function (err) {
        if (batch.cancelled) { return; }  // the abort handler reports
        failRest(index);
        statusBox.textContent = '';
        showError(err.status ? tusErrorText(err, file) : t('failed', {name: file.name, error: t('network')}) +
                  ' ' + t('resume_hint'));
        finishBatch();
      });
    }
    next();
  }

  if (modeSwitch) {
    try { modeSwitch.checked = window.localStorage.getItem(MODE_KEY) === 'tus'; } catch (e) { /* private mode */ }
    modeSwitch.addEventListener('change', switchMode);
  }
  input.addEventListener('change', function () { pick(input.files); });
  form.addEventListener('submit', function (event) { event.preventDefault(); upload(); });
  cancelButton.addEventListener('click', function () { if (current) { current.abort(); } });

  ['dragenter', 'dragover'].forEach(function (type) {
    dropzone.addEventListener(type, function (event) {
      event.preventDefault();
      dropzone.classList.add('dragover');
    });
  });
  ['dragleave', 'drop'].forEach(function (type) {
    dropzone.addEventListener(type, function (event) {
      event.preventDefault();
      dropzone.classList.remove('dragover');
    });
  });
  dropzone.addEventListener('drop', function (event) {
    if (event.dataTransfer && event.dataTransfer.files) { pick(event.dataTransfer.files); }
  });
  dropzone.addEventListener('keydown', function (event) {
    if (event.target === dropzone && (event.key === 'Enter' || event.key === ' ')) { event.preventDefault(); input.click(); }
  });
})();
