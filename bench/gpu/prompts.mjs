// The mixed prompts of the GPU throughput scripts (batch64.mjs, multi_gpu.mjs): prompt i is one of 8 subjects in one
// of 8 places, a photo or an oil painting; 64 different prompts, then they repeat.
const subjects = ["a lighthouse", "a red fox", "a teapot", "an old car", "a sailboat", "a castle", "a robot", "a cat"];
const places = ["at dusk", "in the snow", "on a beach", "in a forest", "in a city", "on mars", "under water", "in a desert"];

export const mixedPrompt = (i) => `${subjects[i % 8]} ${places[Math.floor(i / 8) % 8]}, ${i % 3 ? "oil painting" : "photo"}`;
