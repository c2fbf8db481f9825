#!/bin/sh
# Adds the Server Manager desktop app from this folder to your desktop's menu (for you only):
# a .desktop entry that starts this folder's executable, and the icon. --uninstall takes them out.
# The folder stays where it is; move it first (for example to ~/.local/opt), then run this.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
data=${XDG_DATA_HOME:-$HOME/.local/share}
entry=$data/applications/servermanager.desktop
icon=$data/icons/hicolor/256x256/apps/servermanager.png

if [ "${1:-}" = "--uninstall" ]; then
    rm -f "$entry" "$icon"
    echo "removed $entry and $icon"
    exit 0
fi
if [ ! -x "$here/servermanager-desktop" ]; then
    echo "install.sh: no servermanager-desktop executable in $here" >&2
    exit 1
fi
mkdir -p "$(dirname "$entry")" "$(dirname "$icon")"
cp "$here/servermanager.png" "$icon"
# Exec holds the absolute path, quoted as the Desktop Entry spec asks.
sed "s|^Exec=.*|Exec=\"$here/servermanager-desktop\"|" "$here/servermanager.desktop" >"$entry"
command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database -q "$(dirname "$entry")" || true
echo "added Server Manager to your applications menu ($entry)"
