#!/usr/bin/env node
// Validate Kubernetes manifests against the Kubernetes API schema (no cluster needed): every document through the
// JSON-schema validators of the `kubernetes-models` npm package (the Kubernetes OpenAPI definitions), plus cokv's
// own consistency checks for deploy/k8s/profile-job.yaml (an Indexed Job whose completions equal COKV_SHARDS in
// both Jobs, pods that mount the claimed volume). The two packages are installed once into a private folder
// (not the project's node_modules). Exit 0: valid; 1: the first problem per document, one line each; 77: the
// packages could not be installed (nothing checked).
// Usage: node tools/validate-k8s.mjs [FILE…]   (default deploy/k8s/*.yaml)
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const PKGS = ['kubernetes-models@5.1.0', 'yaml@2.9.1'];
const dir = path.join(process.env.COKV_CACHE_DIR ?? path.join(os.homedir(), '.cache', 'cokv'), 'k8s-validate');
const mod = (p) => pathToFileURL(path.join(dir, 'node_modules', p)).href;
if (!fs.existsSync(path.join(dir, 'node_modules', 'kubernetes-models', 'package.json')) || !fs.existsSync(path.join(dir, 'node_modules', 'yaml', 'package.json'))) {
  fs.mkdirSync(dir, { recursive: true });
  if (!fs.existsSync(path.join(dir, 'package.json'))) fs.writeFileSync(path.join(dir, 'package.json'), '{"private":true}\n');
  const r = spawnSync('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error', '--prefix', dir, ...PKGS], { stdio: ['ignore', 'ignore', 'inherit'] });
  if (r.status !== 0) { console.error(`validate-k8s: skipped: npm could not install ${PKGS.join(' ')} into ${dir}`); process.exit(77); }
}
const { parseAllDocuments } = await import(mod('yaml/dist/index.js'));

/** apiVersion/kind → the kubernetes-models module of that kind. */
function modelPath(apiVersion, kind) {
  const [group, version] = apiVersion.includes('/') ? apiVersion.split('/') : [undefined, apiVersion];
  return group ? `kubernetes-models/${group}/${version}/${kind}.js` : `kubernetes-models/${version}/${kind}.js`;
}

const files = process.argv.slice(2).length ? process.argv.slice(2)
  : fs.readdirSync(path.join(repo, 'deploy/k8s')).filter((f) => /\.ya?ml$/.test(f)).map((f) => path.join(repo, 'deploy/k8s', f));
let problems = 0, checked = 0;
const bad = (where, msg) => { console.error(`validate-k8s: ${where}: ${msg}`); problems++; };
for (const file of files) {
  const docs = parseAllDocuments(fs.readFileSync(file, 'utf8'));
  const objects = [];
  for (const [i, d] of docs.entries()) {
    const where = `${path.relative(process.cwd(), file)} document ${i + 1}`;
    if (d.errors.length) { bad(where, `not valid YAML (${d.errors[0].message.split('\n')[0]})`); continue; }
    const o = d.toJS();
    if (o === null || o === undefined) continue;
    if (typeof o.apiVersion !== 'string' || typeof o.kind !== 'string') { bad(where, 'no apiVersion or kind'); continue; }
    const at = `${where} (${o.kind} ${o.metadata?.name ?? '?'})`;
    const p = modelPath(o.apiVersion, o.kind);
    if (!fs.existsSync(path.join(dir, 'node_modules', p))) { bad(at, `unknown apiVersion/kind ${o.apiVersion} ${o.kind}`); continue; }
    const Model = (await import(mod(p)))[o.kind];
    try {
      new Model(o).validate();
    } catch (e) {
      bad(at, `does not match the Kubernetes schema: ${String(e.message).split('\n')[0]}`);
      continue;
    }
    objects.push({ o, at });
    checked++;
  }
  // cokv's own checks: the shard count, the shared volume.
  const claims = new Set(objects.filter(({ o }) => o.kind === 'PersistentVolumeClaim').map(({ o }) => o.metadata.name));
  const env = (c, name) => c.env?.find((e) => e.name === name)?.value;
  for (const { o, at } of objects.filter(({ o }) => o.kind === 'Job')) {
    const pod = o.spec.template.spec;
    for (const v of pod.volumes ?? []) {
      if (v.persistentVolumeClaim && claims.size && !claims.has(v.persistentVolumeClaim.claimName)) bad(at, `volume ${v.name} claims ${v.persistentVolumeClaim.claimName}, not a claim of this file`);
    }
    for (const c of pod.containers) {
      for (const m of c.volumeMounts ?? []) if (!(pod.volumes ?? []).some((v) => v.name === m.name)) bad(at, `container ${c.name} mounts ${m.name}, which is no volume of the pod`);
      const shards = env(c, 'COKV_SHARDS');
      if (o.spec.completionMode === 'Indexed' && String(o.spec.completions) !== shards) bad(at, `completions ${o.spec.completions} but COKV_SHARDS ${shards} (cokv --shard auto takes the count from COKV_SHARDS)`);
      const indexed = objects.find(({ o: j }) => j.kind === 'Job' && j.spec.completionMode === 'Indexed');
      if (o.spec.completionMode !== 'Indexed' && indexed && shards !== undefined && shards !== String(indexed.o.spec.completions)) {
        bad(at, `COKV_SHARDS ${shards} but the Indexed Job ${indexed.o.metadata.name} has ${indexed.o.spec.completions} completions`);
      }
    }
  }
}
if (problems) process.exit(1);
console.log(`validate-k8s: ${checked} objects in ${files.length} file${files.length > 1 ? 's' : ''} match the Kubernetes schema (kubernetes-models 5.1.0) and cokv's shard/volume checks`);
