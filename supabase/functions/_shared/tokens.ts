// Counting tokens when an upstream never reported usage (a stream cut before its usage chunk,
// the client gone): the charge is then computed from what was actually streamed and flagged
// usage_estimated. OpenAI's BPE encodings (gpt-tokenizer, pure JS, loaded on first use only)
// count OpenAI models exactly; other providers publish no offline tokenizer, so their text is
// counted with o200k_base as an approximation (docs/metering.md, "The openai edge function").

type Encode = (text: string) => number[];

const encoders = new Map<string, Promise<Encode>>();

function load(encoding: "o200k_base" | "cl100k_base"): Promise<Encode> {
  let found = encoders.get(encoding);
  if (!found) {
    found = encoding === "o200k_base"
      ? import("npm:gpt-tokenizer@2.9.0/encoding/o200k_base").then((m) => m.encode as Encode)
      : import("npm:gpt-tokenizer@2.9.0/encoding/cl100k_base").then((m) => m.encode as Encode);
    encoders.set(encoding, found);
  }
  return found;
}

/** The encoding of `model` and whether it is the model's own (exact) or an approximation. */
export function encodingFor(model: string): { encoding: "o200k_base" | "cl100k_base"; exact: boolean } {
  const name = model.toLowerCase().replace(/^openai\//, "");
  if (/^(gpt-4o|chatgpt-4o|gpt-4\.1|gpt-4\.5|gpt-5|gpt-oss|o[1-9])/.test(name)) {
    return { encoding: "o200k_base", exact: true };
  }
  if (/^(gpt-4|gpt-3\.5|text-embedding-3|text-embedding-ada)/.test(name)) {
    return { encoding: "cl100k_base", exact: true };
  }
  return { encoding: "o200k_base", exact: false };
}

export async function counter(model: string): Promise<(text: string) => number> {
  const encode = await load(encodingFor(model).encoding);
  return (text: string) => (text ? encode(text).length : 0);
}

type Message = { role?: unknown; name?: unknown; content?: unknown };

function contentText(content: unknown): string {
  if (typeof content === "string") return content;
  if (!Array.isArray(content)) return "";
  return content
    .map((part) => (part && typeof part === "object" && typeof part.text === "string" ? part.text : ""))
    .join("");
}

/** Prompt tokens of a chat request as OpenAI's cookbook counts them: 3 per message (+1 with a
 * name) and 3 priming the reply, plus the text of every message and of the tool definitions.
 * Image and audio parts are not counted (their price depends on the provider). */
export async function countPrompt(model: string, messages: unknown, tools: unknown): Promise<number> {
  const count = await counter(model);
  let total = 3;
  for (const message of Array.isArray(messages) ? messages as Message[] : []) {
    total += 3 + count(typeof message?.role === "string" ? message.role : "");
    total += count(contentText(message?.content));
    if (typeof message?.name === "string") total += 1 + count(message.name);
  }
  if (tools !== undefined && tools !== null) total += count(JSON.stringify(tools));
  return total;
}

/** The text a streamed chunk adds to the answer: content, refusal, reasoning and tool calls. */
export function chunkText(chunk: unknown): string {
  const choices = (chunk as { choices?: unknown })?.choices;
  if (!Array.isArray(choices)) return "";
  let text = "";
  for (const choice of choices) {
    const delta = choice?.delta;
    if (!delta || typeof delta !== "object") continue;
    for (const field of ["content", "refusal", "reasoning_content", "reasoning"]) {
      if (typeof delta[field] === "string") text += delta[field];
    }
    if (Array.isArray(delta.tool_calls)) {
      for (const call of delta.tool_calls) {
        if (typeof call?.function?.name === "string") text += call.function.name;
        if (typeof call?.function?.arguments === "string") text += call.function.arguments;
      }
    }
  }
  return text;
}
