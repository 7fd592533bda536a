# Install (Debian/Ubuntu, as root) the thirteen CJK fonts the shipped model's data is rendered with:
# eleven training fonts and the two WenQuanYi fonts that render only the held-out test split (the
# last two by file name). prepare.sh packs the fonts it finds; install these first to train the recipe.
#   Noto Sans CJK Light/Regular/Bold/Black, Noto Serif CJK Regular/Bold (their simplified-Chinese faces),
#   Smiley Sans Oblique, AR PL SungtiL GB, KaitiM GB, UKai, UMing; test: WenQuanYi Zen Hei, Micro Hei.
# Light and Black come from fonts-noto-cjk-extra, which has ten more weights; only these two are
# copied, so the Noto Sans design does not outnumber the others in the per-line font draw.
set -eu
apt-get update -q >/dev/null  # a fresh container has no package lists
apt-get install -y -q fonts-noto-cjk fonts-arphic-ukai fonts-arphic-uming fonts-arphic-gbsn00lp \
  fonts-arphic-gkai00mp fonts-wqy-zenhei fonts-wqy-microhei fonts-smiley-sans
tmp=$(mktemp -d)
(cd "$tmp" && apt-get download fonts-noto-cjk-extra && dpkg -x fonts-noto-cjk-extra_*.deb x)
cp "$tmp"/x/usr/share/fonts/opentype/noto/NotoSansCJK-Light.ttc \
   "$tmp"/x/usr/share/fonts/opentype/noto/NotoSansCJK-Black.ttc /usr/share/fonts/opentype/noto/
rm -rf "$tmp"
fc-cache -f >/dev/null || true
