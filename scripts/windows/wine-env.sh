# Sourced by the Wine scripts: where Wine keeps its state and how quiet it is. The
# prefix lives under target/ (never $HOME); set WINEPREFIX to use another.
_dcb_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export WINEPREFIX=${WINEPREFIX:-$_dcb_root/target/wine-prefix}
export WINEDEBUG=${WINEDEBUG:--all}
# No desktop menu entries in $HOME, and no offers to install Mono or Gecko.
export WINEDLLOVERRIDES=${WINEDLLOVERRIDES:-winemenubuilder.exe=d;mscoree=d;mshtml=d}
unset _dcb_root
