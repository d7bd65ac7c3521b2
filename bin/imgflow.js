#!/usr/bin/env node
// The installed `imgflow` command: the compiled CLI (built by `npm run setup`).
import fs from 'node:fs';

/** The help the build saved, if it is newer than the CLI it describes. */
function savedHelp() {
  const saved = new URL('../dist/help.txt', import.meta.url);
  const cli = new URL('../dist/starters/cli.js', import.meta.url);
  try {
    return fs.statSync(saved).mtimeMs >= fs.statSync(cli).mtimeMs ? fs.readFileSync(saved) : undefined;
  } catch {
    return undefined;
  }
}

// `imgflow --help` is printed without loading the CLI: loading it is most of that command's time.
const args = process.argv.slice(2);
const help = args.length === 1 && ['--help', '-h', 'help'].includes(args[0]) ? savedHelp() : undefined;
if (help) process.stdout.write(help);
else await import('../dist/starters/imgflow.js');
