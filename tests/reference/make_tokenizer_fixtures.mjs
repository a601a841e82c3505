// Writes the expected ids of Hugging Face tokenizer.json files on the tokenizer corpus, from
// transformers.js's tokenizers (the npm package @huggingface/tokenizers), an implementation
// independent of the library's. Node is needed only to regenerate the fixtures.
//
//   npm install @huggingface/tokenizers            (anywhere; point NODE_PATH at its node_modules)
//   node tests/reference/make_tokenizer_fixtures.mjs CORPUS TOKENIZER_DIR OUT_JSON
//
// CORPUS is bytes split on "\n"; each line is decoded as UTF-8 with U+FFFD for every maximal
// ill-formed subsequence (the WHATWG decoder, the same rule as Rust's from_utf8_lossy), which is
// what a caller of Hugging Face's tokenizers has to do before encoding. For each line OUT_JSON holds
// the ids of encode(text) (added and special tokens matched, the post-processor applied), the ids of
// encode(text, {add_special_tokens: false}), and decode() of the latter (special tokens kept, no
// clean-up of spaces). "whole" is the same for the corpus as one text, newlines included.
import { createRequire } from "node:module";
import { readFileSync, writeFileSync } from "node:fs";
import { createHash } from "node:crypto";
import { join } from "node:path";

const require = createRequire(join(process.env.NODE_PATH ?? process.cwd(), "x.js"));
const { Tokenizer } = require("@huggingface/tokenizers");
const packageDir = join(require.resolve("@huggingface/tokenizers"), "..", "..");
const version = JSON.parse(readFileSync(join(packageDir, "package.json"), "utf8")).version;

const [corpusPath, dir, outPath] = process.argv.slice(2);
const bytes = readFileSync(corpusPath);
const decoder = new TextDecoder("utf-8", { fatal: false });
const rawLines = [];
for (let start = 0; start < bytes.length;) {
  let end = bytes.indexOf(0x0a, start);
  if (end < 0) end = bytes.length;
  rawLines.push(bytes.subarray(start, end));
  start = end + 1;
}
const tokJson = JSON.parse(readFileSync(join(dir, "tokenizer.json"), "utf8"));
const tokConfig = JSON.parse(readFileSync(join(dir, "tokenizer_config.json"), "utf8"));
const tokenizer = new Tokenizer(tokJson, tokConfig);

const one = (text) => {
  const ids = tokenizer.encode(text).ids;
  const plain = tokenizer.encode(text, { add_special_tokens: false }).ids;
  const decoded = plain.length === 0 ? "" : tokenizer.decode(plain, {
    skip_special_tokens: false,
    clean_up_tokenization_spaces: false,
  });
  return { ids, plain, decoded };
};

const sha = (buf) => createHash("sha256").update(buf).digest("hex");
const out = {
  generator: "tests/reference/make_tokenizer_fixtures.mjs with @huggingface/tokenizers " + version,
  corpus_sha256: sha(bytes),
  tokenizer_json_sha256: sha(readFileSync(join(dir, "tokenizer.json"))),
  lines: rawLines.map((b) => one(decoder.decode(b))),
  whole: one(decoder.decode(bytes)),
};
writeFileSync(outPath, JSON.stringify(out) + "\n");
