#!/bin/sh
# Give matplotlib its prebuilt font list in a writable config dir (it refuses read-only ones),
# so a plot does not rebuild the font cache on every run. Then become the program.
if [ -n "${MPLCONFIGDIR:-}" ] && [ ! -e "$MPLCONFIGDIR" ]; then
  mkdir -p "$MPLCONFIGDIR" && cp /usr/share/codeexec/matplotlib/fontlist-*.json "$MPLCONFIGDIR/" 2>/dev/null
fi
exec "$@"
