// Validate a .glb/.gltf with the Khronos glTF validator; print its JSON report on stdout.
// Usage: node tests/js/validate_gltf.mjs FILE
import { readFile } from "node:fs/promises";
import path from "node:path";
import validator from "gltf-validator";

const file = process.argv[2];
const data = new Uint8Array(await readFile(file));
const report = await validator.validateBytes(data, {
  uri: path.basename(file),
  maxIssues: 0,
  externalResourceFunction: (uri) =>
    readFile(path.resolve(path.dirname(file), decodeURIComponent(uri))).then((b) => new Uint8Array(b)),
});
process.stdout.write(JSON.stringify(report));
