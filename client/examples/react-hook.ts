/**
 * Recipe: a React component over the package's hooks (`/react`). Type-checked by `npm run
 * typecheck` against `@types/react`; shown in docs/CLIENT.md.
 */
import { createElement, type ReactElement } from 'react';
import type { ChatClient } from '../index.js';
import { useRoomEvents } from '../react.js';

/** A component using the hook (createElement instead of JSX so that this file stays plain .ts). */
export function RoomPane(props: { chat: ChatClient; roomId: string; me: string }): ReactElement {
  const room = useRoomEvents(props.chat, props.roomId, {
    onEvent: (event) => {
      switch (event.type) {
        case 'message.new':
          if (event.message.mentions.includes(props.me)) document_title(`${event.message.senderId} mentioned you`);
          break;
        case 'member.left':
          if (event.userId === props.me) document_title(`you were ${event.reason === 'left' ? 'removed' : event.reason}`);
          break;
        default:
          break;
      }
    },
  });
  const h = createElement;
  return h(
    'section',
    null,
    room.connection.state !== 'open' && h('p', { className: 'banner' }, room.connection.state === 'connecting' ? 'Reconnecting…' : 'Offline'),
    room.error && h('p', { className: 'error' }, room.error.message),
    h('button', { onClick: () => void room.loadOlder() }, 'Load older'),
    h(
      'ol',
      null,
      room.messages.map((m) =>
        h(
          'li',
          { key: m.id, className: m.kind },
          h('b', null, m.senderId),
          ' ',
          m.body ?? h('i', null, 'deleted'),
          m.reactions.map((r) => h('span', { key: r.emoji, className: r.me ? 'mine' : undefined }, ` ${r.emoji} ${r.count}`)),
        ),
      ),
    ),
    room.typing.length > 0 && h('p', { className: 'typing' }, `${room.typing.join(', ')} typing…`),
  );
}

/** Stands in for `document.title = ...` (this repo type-checks without the DOM lib). */
function document_title(text: string): void {
  void text;
}
