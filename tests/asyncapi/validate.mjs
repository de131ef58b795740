// Parses and validates an AsyncAPI document with the AsyncAPI parser and its Avro schema
// parser; prints every diagnostic and exits 1 when one is an error (or a warning, so the
// document stays clean). Usage: node validate.mjs <document>
import { readFileSync } from "node:fs";
import { Parser } from "@asyncapi/parser";
import { AvroSchemaParser } from "@asyncapi/avro-schema-parser";

const path = process.argv[2];
const parser = new Parser();
parser.registerSchemaParser(AvroSchemaParser());
const { document, diagnostics } = await parser.parse(readFileSync(path, "utf8"), { source: path });
const severities = ["error", "warning", "info", "hint"];
let failed = document === undefined;
for (const d of diagnostics) {
  const severity = severities[d.severity] ?? String(d.severity);
  if (d.severity <= 1) failed = true;
  console.log(`${severity} ${d.code} at ${d.path.join(".")}: ${d.message}`);
}
if (document !== undefined) {
  const channels = document.channels().all().map((c) => c.address());
  const operations = document.operations().all().length;
  console.log(`parsed: ${channels.length} channels, ${operations} operations`);
}
process.exit(failed ? 1 : 0);
