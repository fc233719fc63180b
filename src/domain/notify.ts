/** Notification DTOs and settings (docs/API.md, "device" and "notify"). */

export type RoomLevel = 'all' | 'mentions' | 'none';
export type EmailMode = 'digest' | 'off';

export interface QuietHours {
  /** `HH:MM`, 24-hour clock, local to `timeZone`. */
  start: string;
  end: string;
  /** An IANA time zone (`Europe/Berlin`). */
  timeZone: string;
}

export interface Preferences {
  email: EmailMode;
  push: boolean;
  quietHours: QuietHours | null;
}

export interface RoomPreferenceDto {
  roomId: string;
  level: RoomLevel;
  muteUntil: Date | null;
}

export interface PreferencesDto extends Preferences {
  /** Rooms with a level or mute of their own (any other room: `mentions`, not muted). */
  rooms: RoomPreferenceDto[];
}

/** A web push subscription of one of my browsers. */
export interface DeviceDto {
  id: string;
  kind: 'webpush';
  endpoint: string;
  label: string | null;
  createdAt: Date;
  lastPushAt: Date | null;
}
