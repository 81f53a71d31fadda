// Probot 13 with an app that does nothing: the peer that bench/intake.py measures nofx's intake against.
const { run } = require("probot");

run(() => {});
