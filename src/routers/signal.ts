import { z } from 'zod';
import { authedProcedure, router } from '../trpc/init.js';
import { RoomId, SignalHangup, SignalIce, SignalSdp, UserId } from './schemas.js';

const To = { roomId: RoomId, toUserId: UserId };

/** Peer-to-peer call signaling: relayed live to the target's `inbox.events` as `signal`. */
export const signalRouter = router({
  send: authedProcedure
    .input(
      z.discriminatedUnion(
        'type',
        [
          z.object({ ...To, type: z.literal('offer'), payload: SignalSdp }),
          z.object({ ...To, type: z.literal('answer'), payload: SignalSdp }),
          z.object({ ...To, type: z.literal('ice'), payload: SignalIce }),
          z.object({ ...To, type: z.literal('hangup'), payload: SignalHangup.nullish() }),
        ],
        { error: "type must be 'offer', 'answer', 'ice' or 'hangup'" },
      ),
    )
    .mutation(({ ctx, input }) => ctx.services.signals.send(ctx.actor, input)),

  /**
   * What a call client needs: `{ iceServers }` for its RTCPeerConnection (RTC_ICE_SERVERS), plus a
   * TURN server with a credential minted for the caller and its `expiresAt` (RTC_TURN_URLS).
   */
  config: authedProcedure.query(({ ctx }) => ctx.services.signals.config(ctx.actor)),
});
