// The scheduler rows of the GPU speed table, shared by bench/gpu/schedulers.mjs (candlewick) and
// read by bench/gpu/schedulers.py (diffusers, through `node -p`): name users pick, candlewick's
// `scheduler` option, steps, guidance. diffusers builds the same class with the same fields over
// the model's scheduler config (from_config, as candlewick merges them).
export const SCHEDULER_ROWS = [
  { name: "ddim", scheduler: "ddim", diffusers: ["DDIMScheduler", {}], steps: 50, guidance: 7.5 },
  { name: "plms", scheduler: "plms", diffusers: ["PNDMScheduler", { skip_prk_steps: true }], steps: 50, guidance: 7.5 },
  { name: "euler", scheduler: "euler", diffusers: ["EulerDiscreteScheduler", {}], steps: 50, guidance: 7.5 },
  { name: "euler-a", scheduler: "euler-a", diffusers: ["EulerAncestralDiscreteScheduler", {}], steps: 50, guidance: 7.5 },
  { name: "heun", scheduler: "heun", diffusers: ["HeunDiscreteScheduler", {}], steps: 25, guidance: 7.5 },
  {
    name: "dpm++-2m-karras", scheduler: "dpm++-2m-karras",
    diffusers: ["DPMSolverMultistepScheduler", { algorithm_type: "dpmsolver++", solver_order: 2, use_karras_sigmas: true }],
    steps: 25, guidance: 7.5,
  },
  {
    name: "dpm++-2m-sde-karras", scheduler: "dpm++-2m-sde-karras",
    diffusers: ["DPMSolverMultistepScheduler", { algorithm_type: "sde-dpmsolver++", solver_order: 2, use_karras_sigmas: true }],
    steps: 25, guidance: 7.5,
  },
  { name: "unipc", scheduler: "unipc", diffusers: ["UniPCMultistepScheduler", {}], steps: 20, guidance: 7.5 },
  { name: "ddpm", scheduler: "ddpm", diffusers: ["DDPMScheduler", {}], steps: 50, guidance: 7.5 },
  { name: "lcm", scheduler: "lcm", diffusers: ["LCMScheduler", {}], steps: 4, guidance: 1.0 },
];
