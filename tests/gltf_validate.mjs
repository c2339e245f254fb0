// Print the Khronos glTF-Validator report of each file as one JSON array on stdout.
//
//   node tests/gltf_validate.mjs FILE.glb [FILE.gltf ...]
//
// The validator is the npm package `gltf-validator`, installed (git-ignored) with
//   npm install --prefix .cache/npm gltf-validator@2.0.0-dev.3.10
// It is looked up in $GLTF_VALIDATOR_DIR, else <repo>/.cache/npm/node_modules/gltf-validator.
// External buffers/images of a .gltf are read relative to the file, so a missing .bin shows up
// as an IO_ERROR in the report; a file that is neither glTF nor GLB gets {"uri", "error"}
// instead of a report. Exit status: 0 when every report was produced (whatever it
// says), 2 on usage errors or when the validator cannot be loaded.
import { readFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const dir = process.env.GLTF_VALIDATOR_DIR
  ?? path.join(here, "..", ".cache", "npm", "node_modules", "gltf-validator");

let validator;
try {
  validator = await import(pathToFileURL(path.join(dir, "module.mjs")).href);
} catch (e) {
  console.error(`gltf-validator not found in ${dir}: ${e.message}`);
  process.exit(2);
}

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node tests/gltf_validate.mjs FILE.glb|FILE.gltf ...");
  process.exit(2);
}

const reports = [];
for (const file of files) {
  const data = new Uint8Array(await readFile(file));
  try {
    reports.push(await validator.validateBytes(data, {
      uri: path.basename(file),
      maxIssues: 0, // unlimited: tests count every error
      writeTimestamp: false, // reproducible output
      externalResourceFunction: async (uri) =>
        new Uint8Array(await readFile(path.resolve(path.dirname(file), decodeURIComponent(uri)))),
    }));
  } catch (e) {
    // The validator rejects input it cannot even classify as glTF/GLB: report it, go on.
    reports.push({ uri: path.basename(file), error: String(e) });
  }
}
console.log(JSON.stringify(reports, null, 1));
