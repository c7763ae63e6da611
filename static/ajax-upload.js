/*
 * The /ajax page: drag and drop or pick files, upload them in ONE request
 * (so cancelling leaves nothing on the server), a <progress> per file and one
 * overall, then the list of stored files with links.
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

  function t(key, values) {
    var text = messages[key] || key;
    Object.keys(values || {}).forEach(function (name) { text = text.split('${' + name + '}').join(values[name]); });
    return text;
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
      name.title = file.name + ' (' + file.size + ' ' + t('bytes') + ')';
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
    meta.textContent = ' ' + file.size + ' ' + t('bytes') + ' · sha256 ' + file.sha256;
    item.appendChild(link);
    item.appendChild(meta);
    results.insertBefore(item, before === undefined ? results.firstChild : before);
  }

  function upload() {
    if (current) { return; }
    if (!picked.length) { showError(t('nothing')); return; }
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
      error: function (xhr, status, message) {
        picked.forEach(function (file) { file.row.item.classList.add('failed'); });
        if (status === 'abort') {
          statusBox.textContent = t('cancelled');
        } else {
          statusBox.textContent = '';
          showError(t('failed', {name: picked.length === 1 ? picked[0].name : t('files', {count: picked.length}),
                                 error: message || t('network')}));
        }
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
          showError(t('failed', {name: files[index] ? files[index].name : '', error: err.serverMessage || err.message}));
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
        showError(t('failed', {name: file.name, error: err.serverMessage || err.message || t('network')}) +
                  (err.status ? '' : ' ' + t('resume_hint')));
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
