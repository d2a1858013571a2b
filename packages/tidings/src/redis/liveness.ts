/**
 * Whether a group member's process still exists, for members on this host: a member whose process is gone (killed,
 * crashed) can be evicted at once instead of after its lease.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';

/** Identifies this host and pid namespace: process liveness can be checked for members with the same host id. */
export const hostId: string = (() => {
  let namespace = '';
  try {
    namespace = fs.readlinkSync('/proc/self/ns/pid');
  } catch {
    // Not Linux (or no /proc): the host name alone.
  }
  return `${os.hostname()}|${namespace}`;
})();

/** True unless the process is known not to exist. */
export function processExists(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

/** The info a member row carries: its topics and where it runs. */
export interface MemberInfo {
  topics: string[];
  host: string;
  pid: number;
}

export function parseMemberInfo(json: string): MemberInfo {
  try {
    const parsed = JSON.parse(json) as Partial<MemberInfo>;
    return {
      topics: Array.isArray(parsed.topics) ? parsed.topics.filter((t) => typeof t === 'string') : [],
      host: typeof parsed.host === 'string' ? parsed.host : '',
      pid: typeof parsed.pid === 'number' ? parsed.pid : 0,
    };
  } catch {
    return { topics: [], host: '', pid: 0 };
  }
}

/** True if the member ran on this host and its process no longer exists. */
export function isDeadHere(info: MemberInfo): boolean {
  return info.host === hostId && info.pid > 0 && !processExists(info.pid);
}
