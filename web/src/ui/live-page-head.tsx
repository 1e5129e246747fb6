import type { LiveState } from '../live.js';
import type { LiveFeedState } from '../use-live-refresh.js';

const LIVE_TEXT: Record<LiveState, string> = {
  live: 'Live',
  connecting: 'Connecting…',
  offline: 'Live updates off',
  crowded: 'Live updates off: this API key has too many consoles open; close some tabs',
};

/**
 * A live page's heading: its title, whether live updates are flowing (with Reconnect now when they
 * are not), and a Refresh button, which retries the live updates too when they are off.
 * `liveFor`: what of the page the live updates cover, when not all of it (said beside "Live").
 */
export function LivePageHead({
  title,
  live,
  onRefresh,
  liveFor,
}: {
  title: string;
  live: LiveFeedState;
  onRefresh: () => void;
  liveFor?: string;
}) {
  return (
    <div className="page-head">
      <h1>{title}</h1>
      <span className={`live live-${live.state}`} role="status">
        {LIVE_TEXT[live.state]}
        {live.state === 'live' && liveFor ? ` (${liveFor})` : ''}
      </span>
      {(live.state === 'offline' || live.state === 'crowded') && (
        <button type="button" onClick={live.reconnectNow}>
          Reconnect now
        </button>
      )}
      <button
        type="button"
        onClick={() => {
          live.reconnectNow();
          onRefresh();
        }}
      >
        Refresh
      </button>
    </div>
  );
}
