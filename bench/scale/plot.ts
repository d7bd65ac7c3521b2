/**
 * The scale bench's figure, drawn by gnuplot (Debian's gnuplot-nox, which scripts/setup.sh
 * installs) from the data files it writes beside it: throughput and map p95 against concurrency,
 * one line per driver, and where each process's CPU went at each driver's saturation step.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Run } from '../../activities/runner.js';

export interface PlotStep {
  driver: string;
  concurrency: number;
  opsPerSecond: number;
  mapP95Ms: number;
}

export interface PlotInput {
  dir: string;
  title: string;
  steps: PlotStep[];
  /** CPU seconds per operation at saturation, by process, one column per driver. */
  cpu: { drivers: string[]; rows: { process: string; perOp: number[] }[] };
}

/** gnuplot reads the strings in its script and data files: keep them to plain words. */
const plain = (s: string) => s.replace(/["\\\t\n]/g, ' ');

export async function plot(run: Run, o: PlotInput): Promise<string> {
  fs.mkdirSync(o.dir, { recursive: true });
  const drivers = [...new Set(o.steps.map((s) => s.driver))];
  for (const d of drivers) {
    const rows = o.steps.filter((s) => s.driver === d).map((s) => `${s.concurrency}\t${s.opsPerSecond}\t${s.mapP95Ms}`);
    fs.writeFileSync(
      path.join(o.dir, `scale-steps-${d}.tsv`),
      `# concurrency\tops_per_s\tmap_p95_ms\n${rows.join('\n')}\n`,
    );
  }
  const cpuFile = path.join(o.dir, 'scale-cpu.tsv');
  fs.writeFileSync(
    cpuFile,
    `process\t${o.cpu.drivers.join('\t')}\n${o.cpu.rows.map((r) => `"${plain(r.process.replace(/ \(.*\)$/, ''))}"\t${r.perOp.map((x) => x.toFixed(4)).join('\t')}`).join('\n')}\n`,
  );
  const png = path.join(o.dir, 'scale.png');
  const lines = (column: number) =>
    drivers
      .map(
        (d) =>
          `'${path.join(o.dir, `scale-steps-${d}.tsv`)}' using 1:${column} with linespoints lw 2 pt 7 title '${d}'`,
      )
      .join(', ');
  const script = [
    `set terminal pngcairo size 1800,560 font 'sans,10'`,
    `set output '${png}'`,
    `set multiplot layout 1,3 title "${plain(o.title)}"`,
    `set bmargin 11`,
    `set logscale x 2`,
    `set xlabel 'concurrency (operations in flight)'`,
    `set grid`,
    `set key bottom right`,
    `set title 'throughput (map, unmap and delete operations per second)'`,
    `set ylabel 'operations/s'`,
    `set yrange [0:*]`,
    `plot ${lines(2)}`,
    `set title 'map latency, p95'`,
    `set ylabel 'ms'`,
    `plot ${lines(3)}`,
    `unset logscale x`,
    `set title 'CPU seconds per operation at saturation, by process'`,
    `set ylabel 'CPU s / operation'`,
    `set xlabel ''`,
    `set style data histograms`,
    `set style histogram clustered gap 1`,
    `set style fill solid 0.8 border -1`,
    `set xtics rotate by 40 right font 'sans,8'`,
    `set key top right`,
    `set datafile separator '\\t'`,
    `plot ${o.cpu.drivers.map((d, i) => `'${cpuFile}' using ${i + 2}:xtic(1) title '${d}'`).join(', ')}`,
    `unset multiplot`,
  ].join('\n');
  const scriptFile = path.join(o.dir, 'scale.gnuplot');
  fs.writeFileSync(scriptFile, `${script}\n`);
  await run(['gnuplot', scriptFile]);
  return png;
}
