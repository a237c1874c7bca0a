/** `cokv report` lives in ./report/ (reader, model, charts, page); this path stays for existing importers. */
export * from './report/index.js';
