import type { LiveState } from '../live.js';

const LIVE_TEXT: Record<LiveState, string> = {
  live: 'Live',
  connecting: 'Connecting…',
  offline: 'Live updates off',
  crowded: 'Live updates off: this API key has too many consoles open; close some tabs',
};

/**
 * A live page's heading: its title, whether live updates are flowing, and a Refresh button.
 * `liveFor`: what of the page the live updates cover, when not all of it (said beside "Live").
 */
export function LivePageHead({
  title,
  live,
  onRefresh,
  liveFor,
}: {
  title: string;
  live: LiveState;
  onRefresh: () => void;
  liveFor?: string;
}) {
  return (
    <div className="page-head">
      <h1>{title}</h1>
      <span className={`live live-${live}`} role="status">
        {LIVE_TEXT[live]}
        {live === 'live' && liveFor ? ` (${liveFor})` : ''}
      </span>
      <button type="button" onClick={onRefresh}>
        Refresh
      </button>
    </div>
  );
}
