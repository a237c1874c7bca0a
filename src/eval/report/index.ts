/**
 * `cokv report`: reader (read.ts: results folder → records), model (model.ts: records → what each chart and table
 * shows), charts (charts.ts: SVG) and page (page.ts: HTML).
 */
export { esc, fmtBytes, fmtNum, heatmap, lineChart, niceTicks, type ChartPoint, type HeatmapOptions, type LineChartOptions, type LineSeries, type RefLine } from './charts.js';
export { readResults, type BenchData, type BenchRow, type NeedleData, type ProfileData, type ReadOptions, type Results, type RunRow } from './read.js';
export {
  REPORT_COKV_BUDGET, REPORT_COKV_WINDOW, buildModel, cokvKeptTokens, datasetVariant, isPercentMetric, pressName, reportAlpha, scoreLines, shownCi,
  type ChartSpec, type FigureModel, type ReportModel, type ResultGroupModel,
} from './model.js';
export { buildReport, renderChart, renderPage, standaloneSvg, type ReportOptions } from './page.js';
