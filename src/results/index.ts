/**
 * Results: the one record of a scored run (record.ts), the readers and writers of runs folders and summary.json
 * (read.ts), the tables of results.md and the report (tables.ts) and the SVG figures (figures.ts).
 */
export { SUMMARY_ENTRY_KEYS, recordFromEntry, recordFromMetrics, summaryEntry, tagStorageVariants, type RunRecord, type SummaryEntry } from './record.js';
export {
  readBenchFiles, readMaskingFiles, readRunRecords, readSummaryFile, writeSummaryFile, warnSkip,
  type BenchData, type BenchRow, type MaskingData, type SkipHandler, type SummaryMeta,
} from './read.js';
export { resultsDocument, toHtml, toMarkdown, type Block, type DocumentInputs } from './tables.js';
export { resultFigures, type FigureFile } from './figures.js';
