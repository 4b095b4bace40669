export interface Runtime {
  name: string;
  command: string;
  args: string[];
}
export const runtimes: Runtime[];
export function runSmoke(runtime: Runtime): Promise<{ code: number | null; output: string }>;
