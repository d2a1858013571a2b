#!/usr/bin/env node
// The installed `tidings` command. A committed shim, so that npm links the command at install time, before
// `prepare` has compiled dist/ (npm links no bin whose file is missing). It runs the compiled program.
import '../dist/main.js';
