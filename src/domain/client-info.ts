/**
 * What a WebSocket client says about itself in its connection parameters (besides the token):
 * `clientType` (`web`, `cli`, `ios`, ...), `clientVersion` and a stable `deviceId`. Shown in the
 * sessions' audit lines and in /admin/stats; never trusted for anything else. A value that is
 * missing or not of the allowed shape is left out (a connection is never refused for it).
 */
export interface ClientInfo {
  clientType: string | null;
  clientVersion: string | null;
  deviceId: string | null;
}

const SHAPES = {
  clientType: /^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$/,
  clientVersion: /^[A-Za-z0-9][A-Za-z0-9.+_-]{0,31}$/,
  deviceId: /^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$/,
} as const;

const pick = (params: Record<string, unknown> | null | undefined, key: keyof typeof SHAPES): string | null => {
  const v = params?.[key];
  return typeof v === 'string' && SHAPES[key].test(v) ? v : null;
};

export function clientInfoOf(params: Record<string, unknown> | null | undefined): ClientInfo {
  return { clientType: pick(params, 'clientType'), clientVersion: pick(params, 'clientVersion'), deviceId: pick(params, 'deviceId') };
}

export const NO_CLIENT_INFO: ClientInfo = { clientType: null, clientVersion: null, deviceId: null };
