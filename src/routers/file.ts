import { z } from 'zod';
import { authedProcedure, router } from '../trpc/init.js';
import { FileId, FileName, Mime, RoomId } from './schemas.js';

/** Uploaded files (docs/API.md, "Files"): upload tickets and access-checked downloads. */
export const fileRouter = router({
  /** Where to PUT a file's bytes (members who may post); then attach it to chat.send as `{ fileId }`. */
  createUpload: authedProcedure
    .input(
      z.object({
        roomId: RoomId,
        name: FileName,
        size: z.number().int().min(0, 'size must not be negative').max(Number.MAX_SAFE_INTEGER),
        mime: Mime,
      }),
    )
    .mutation(({ ctx, input }) => ctx.services.files.createUpload(ctx.actor, input)),

  /** The file's metadata and short-lived signed URLs: members of its room only (NOT_FOUND otherwise). */
  get: authedProcedure.input(z.object({ fileId: FileId })).query(({ ctx, input }) => ctx.services.files.get(ctx.actor, input.fileId)),
});
