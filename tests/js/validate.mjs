// Validate glTF files with the Khronos glTF validator (npm gltf-validator); prints one JSON report per file.
// Usage: node tests/js/validate.mjs FILE.glb ...
import { readFile } from "node:fs/promises";
import validator from "gltf-validator";

const reports = [];
for (const path of process.argv.slice(2)) {
  const data = new Uint8Array(await readFile(path));
  const report = await validator.validateBytes(data, {
    uri: path,
    maxIssues: 100,
    externalResourceFunction: () => Promise.reject(new Error("external resources are not expected")),
  });
  reports.push(report);
}
process.stdout.write(JSON.stringify(reports));
