/**
 * Meetings through the server's `video.*` procedures (issue 4). Coded against the contract names
 * `video.create({ roomId, title? })` and `video.joinToken({ meetingId })`: while the server's
 * AppRouter has no `video` namespace the calls go through the narrow contract type below, and once
 * it has one, its real types are used (the conditional type picks them up by itself). At run time a
 * server without video answers NOT_FOUND (no such procedure) or PRECONDITION_FAILED (no provider
 * configured); both become one clear line.
 */
import { TRPCClientError } from '@trpc/client';
import type { ChatClient } from '../index.js';
import { errorCode } from '../errors.js';
import { CliError } from './errors.js';

/** The contract of issue 4, as much of it as the CLI uses. */
interface ContractVideoClient {
  create: { mutate(input: { roomId: string; title?: string }): Promise<{ id: string }> };
  joinToken: {
    mutate(input: { meetingId: string }): Promise<{ provider: string; url: string; token: string; expiresAt: Date | string | null }>;
  };
}

type Trpc = ChatClient['trpc'];
type VideoClient = Trpc extends { video: infer V } ? V : ContractVideoClient;

export interface MeetingJoin {
  meetingId: string;
  roomId: string;
  provider: string;
  url: string;
  token: string;
  expiresAt: string | null;
}

export async function createMeeting(client: ChatClient, roomId: string, title?: string): Promise<MeetingJoin> {
  const video = (client.trpc as unknown as { video: VideoClient }).video;
  try {
    const meeting = await video.create.mutate({ roomId, ...(title ? { title } : {}) });
    const join = await video.joinToken.mutate({ meetingId: meeting.id });
    const expiresAt = join.expiresAt instanceof Date ? join.expiresAt.toISOString() : (join.expiresAt ?? null);
    return { meetingId: meeting.id, roomId, provider: join.provider, url: join.url, token: join.token, expiresAt };
  } catch (err) {
    const code = errorCode(err);
    if (code === 'NOT_FOUND' && err instanceof TRPCClientError && /no procedure/i.test(err.message)) {
      throw new CliError('video is not configured on this server (it has no video.* procedures)');
    }
    if (code === 'PRECONDITION_FAILED' && err instanceof TRPCClientError) {
      throw new CliError(/^video is not configured/i.test(err.message) ? err.message : `video is not configured on this server: ${err.message}`);
    }
    throw err;
  }
}
