/** Outgoing webhooks: the event types a tenant can subscribe to, and the shapes the API returns. */

export const WEBHOOK_EVENT_TYPES = [
  'message.new',
  'message.edited',
  'message.deleted',
  'reaction.added',
  'member.joined',
  'member.left',
  'room.created',
  'room.updated',
  'room.archived',
  'file.ready',
  'meeting.started',
  'meeting.ended',
  '*',
] as const;

export type WebhookEventType = (typeof WEBHOOK_EVENT_TYPES)[number];

export interface WebhookDto {
  id: string;
  url: string;
  events: WebhookEventType[];
  description: string | null;
  enabled: boolean;
  /** Start of the current run of failed deliveries (null: the last one succeeded, or none yet). */
  failingSince: Date | null;
  createdAt: Date;
  updatedAt: Date;
}

export interface WebhookDeliveryDto {
  eventId: string;
  eventType: string;
  roomId: string;
  status: 'pending' | 'delivered' | 'failed';
  attempts: number;
  lastError: string | null;
  lastStatusCode: number | null;
  /** When a pending delivery is tried next. */
  nextAttemptAt: Date | null;
  createdAt: Date;
  deliveredAt: Date | null;
}

/** The body of every webhook request (the `data` of room events as `chat.events` yields them). */
export interface WebhookPayload {
  type: string;
  /** ISO time of the event. */
  timestamp: string;
  tenant: string;
  data: unknown;
}
