/*
 * The /ajax page: drag and drop or pick files, upload them in ONE request
 * (so cancelling leaves nothing on the server), a <progress> per file and one
 * overall, then the list of stored files with links.
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
  var messages = JSON.parse(document.getElementById('sessup-messages').textContent || '{}');
  var picked = [];
  var current = null;

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
  }

  function busy(on) {
    startButton.disabled = on;
    cancelButton.disabled = !on;
    input.disabled = on;
    form.setAttribute('aria-busy', on ? 'true' : 'false');
  }

  function addResult(file) {
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
    results.insertBefore(item, results.firstChild);
  }

  function upload() {
    if (current) { return; }
    if (!picked.length) { showError(t('nothing')); return; }
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
        (data.files || []).slice().reverse().forEach(addResult);
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
