import { RoomHubs } from '../realtime/room-hub.js';
import type { Deps } from './deps.js';
import { MessageService } from './messages.js';
import { RoomLog } from './room-log.js';
import { RoomService } from './rooms.js';
import { StreamService } from './streams.js';
import { UserService } from './users.js';

export interface Services {
  deps: Deps;
  log: RoomLog;
  hubs: RoomHubs;
  users: UserService;
  rooms: RoomService;
  messages: MessageService;
  streams: StreamService;
}

export function createServices(deps: Deps): Services {
  const log = new RoomLog(deps);
  const hubs = new RoomHubs(deps.bus, log, (err) => deps.log.warn({ err }, 'room hub error'));
  const users = new UserService(deps);
  const rooms = new RoomService(deps, log);
  const messages = new MessageService(deps, log, rooms);
  const streams = new StreamService(rooms, log, hubs);
  return { deps, log, hubs, users, rooms, messages, streams };
}
