#!/usr/bin/env node
// The installed `imgflow` command: the compiled CLI (built by `npm run setup`).
import '../dist/starters/imgflow.js';
