'use strict';

// egg-cluster master (forked by run.js with an IPC channel, so messages the
// workers address `to: 'parent'` reach run.js). Not meant to be run by hand.

const path = require('path');
const { startCluster } = require('egg-cluster');

startCluster({
  baseDir: __dirname,                            // needs package.json; app.js / agent.js live here
  framework: path.join(__dirname, 'framework'),  // absolute path -> used as is (egg-utils getFrameworkPath)
  workers: 1,
  port: Number(process.env.BENCH_PORT || 17001),
  // non-production: no refork, so a worker dying at start-up makes the master exit
  // (run.js then fails fast instead of waiting for its timeout)
  env: process.env.EGG_SERVER_ENV || 'local',
}, () => {
  // nothing: the master itself sends { action: 'egg-ready', to: 'parent' } to run.js
});
