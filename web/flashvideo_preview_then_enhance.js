// FlashVideo: preview first, enhance with one click.
// Adds two buttons to "FlashVideo Stage I Sampler" nodes:
//   "Preview only"          mutes the Stage II part of the graph and queues: only the cheap 270p preview runs.
//   "Enhance this preview"  un-mutes Stage II, pins the Stage I seed, and queues: ComfyUI reuses the cached
//                           Stage I result (its inputs did not change), so only Stage II runs on exactly that preview.
// The Stage II part is every node downstream of a "FlashVideo Prepare Stage II" node. Save Video nodes show the
// preview and the result inline.
import { app } from "../../scripts/app.js";

const MODE_ALWAYS = 0;
const MODE_NEVER = 2;
const STAGE2_ENTRY = "FlashVideoPrepareStage2";

function downstreamOf(graph, startNodes) {
  const seen = new Set();
  const queue = [...startNodes];
  while (queue.length) {
    const node = queue.pop();
    if (!node || seen.has(node.id)) continue;
    seen.add(node.id);
    for (const output of node.outputs ?? []) {
      for (const linkId of output.links ?? []) {
        const link = graph.links[linkId] ?? graph.links.get?.(linkId);
        if (link) queue.push(graph.getNodeById(link.target_id));
      }
    }
  }
  return [...seen].map((id) => graph.getNodeById(id));
}

function stage2Nodes() {
  const graph = app.graph;
  const entries = graph._nodes.filter((n) => n.comfyClass === STAGE2_ENTRY || n.type === STAGE2_ENTRY);
  return downstreamOf(graph, entries);
}

function setMode(nodes, mode) {
  for (const node of nodes) node.mode = mode;
  app.graph.setDirtyCanvas(true, true);
}

function seedWidget(stage1Node) {
  return stage1Node.widgets?.find((w) => w.name === "seed");
}

// The seed each Stage I sampler was last queued with, however it was queued (our buttons or Queue):
// with "randomize" the frontend changes the seed right AFTER queueing, so Enhance must go back to
// this value, or Stage I would run again with a new seed instead of reusing the cached preview.
const previewSeeds = new WeakMap();

function recordQueuedSeeds() {
  for (const node of app.graph._nodes) {
    const seed = node.comfyClass === "FlashVideoStage1Sampler" ? seedWidget(node) : null;
    if (seed) previewSeeds.set(node, seed.value);
  }
}

function pinSeed(stage1Node) {
  const seed = seedWidget(stage1Node);
  if (seed && previewSeeds.has(stage1Node)) seed.value = previewSeeds.get(stage1Node);
  const control = stage1Node.widgets?.find((w) => w.name === "control_after_generate");
  if (control && control.value !== "fixed") control.value = "fixed";
}

app.registerExtension({
  name: "FlashVideo.PreviewThenEnhance",
  setup() {
    const graphToPrompt = app.graphToPrompt.bind(app);
    app.graphToPrompt = async (...args) => {
      const prompt = await graphToPrompt(...args);
      recordQueuedSeeds();
      return prompt;
    };
  },
  nodeCreated(node) {
    if (node.comfyClass !== "FlashVideoStage1Sampler") return;
    const preview = node.addWidget("button", "Preview only (Stage I)", null, async () => {
      setMode(stage2Nodes(), MODE_NEVER);
      await app.queuePrompt(0, 1);
    }, { serialize: false });
    const enhance = node.addWidget("button", "Enhance this preview (Stage II)", null, async () => {
      const nodes = stage2Nodes();
      if (!nodes.length) {
        alert("No FlashVideo Prepare Stage II node in this graph: load the 'text to video' template.");
        return;
      }
      pinSeed(node);
      setMode(nodes, MODE_ALWAYS);
      await app.queuePrompt(0, 1);
    }, { serialize: false });
    // Buttons hold no value: keep them out of widgets_values, which saved workflows read by position.
    for (const button of [preview, enhance]) button.serialize = false;
  },
});
