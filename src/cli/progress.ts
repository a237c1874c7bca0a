/** The progress bar lives in the library (src/util/progress.ts); the commands import it from here as before. */
export { ProgressBar, estimateEta, formatDuration } from '../util/progress.js';
