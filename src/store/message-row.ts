import type { Selectable } from 'kysely';
import type { Tables } from './database.js';

/** The columns of `message` that every message read selects: what a MessageDto is built from. */
export const MESSAGE_FIELDS = [
  'id',
  'room_id',
  'seq',
  'sender_id',
  'body',
  'key_id',
  'kind',
  'attachments',
  'reply_to_id',
  'mentions',
  'metadata',
  'card',
  'reply_count',
  'last_reply_at',
  'created_at',
  'edited_at',
  'deleted_at',
] as const satisfies readonly (keyof Tables['message'])[];

/** `MESSAGE_FIELDS` qualified with the alias `m`, for joins. */
export const MESSAGE_FIELDS_M = MESSAGE_FIELDS.map((f) => `m.${f}` as const);

/** A message row as read: typed by the entity (src/store/entities.ts). */
export type MessageRow = Pick<Selectable<Tables['message']>, (typeof MESSAGE_FIELDS)[number]>;
