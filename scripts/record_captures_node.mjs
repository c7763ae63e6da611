// Upload with Node's built-in fetch() and FormData (no npm package), for
// scripts/record_captures.py.  Argument: a JSON job
//   {"url": ..., "field": "inputFile", "fields": [[name, value]...], "files": [[filename, path]...]}
import { readFileSync } from "node:fs";

const job = JSON.parse(process.argv[2]);
const form = new FormData();
for (const [name, value] of job.fields) form.append(name, value);
for (const [filename, path] of job.files) form.append(job.field, new Blob([readFileSync(path)]), filename);
const res = await fetch(job.url, { method: "POST", body: form });
if (!res.ok) {
  console.error(`capture server answered ${res.status}`);
  process.exit(1);
}
