"""Prompt sets of ``openwan bench demo`` beyond the fixed single-object benchmark (world.benchmark_prompts):

* ``two_objects``: two-object scenes in the world's own two-object wording ("a red circle moving to the left and
  a blue square moving to the right"), each object graded apart (:func:`openwan.demo.detect.detect_objects`);
  a scene is "heldout" when one of its objects is a held-out combination.
* ``paraphrase``: single objects described in ways the world's captions never are (no caption template, no motion
  phrase of ``world.MOTION_PHRASES``, some color synonyms): whether the model follows the meaning or the wording.
  Kept apart from training: no caption the world can draw equals one of them, and none holds a motion phrase of
  the templates (a test checks both), so the training captions (drawn from the templates) never hold them.
* ``paraphrase2``: a second such set (20 prompts, the looping motions too), written on 2026-12-05 before the
  prompt extension's vocabulary was widened and without looking its words up in the parser, kept apart the same
  way. The widened vocabulary was developed looking at the failures of the first two sets.
* ``paraphrase3``: a third such set (20 prompts), written on 2026-12-05 after the second and before the widened
  vocabulary was built, and not parsed or generated until that vocabulary was final: its test set.
* ``paraphrase4``: a fourth (28 prompts: 3 of each classic motion, 7 looping), written blind by a helper given
  only the world's names and the template phrases to avoid, and read only after the vocabulary's second widening
  was committed: the test set of that widening. From then on a dev set: the rules were widened from its misses.
* ``paraphrase5``: a fifth (28 prompts, the same mix), written blind by a second helper, read only after those
  rules were committed: their test set. From then on a dev set.
* ``paraphrase6``: a sixth (28 prompts, the same mix, seven imagined writers of four prompts each), written blind
  by a third helper, read only after the rules widened from the fifth set were committed: their test set. From
  then on a dev set.
* ``paraphrase7``: a seventh (28 prompts, seven other imagined writers), written blind by a fourth helper, read
  only after the rules widened from the sixth set were committed: their test set. From then on a dev set.
* ``paraphrase8``: an eighth (28 prompts, seven writers of the helper's choosing), written blind by a fifth
  helper, read only after the rules widened from the seventh set were committed: their test set. From then on a
  dev set.
* ``paraphrase9``: a ninth (28 prompts), written blind by a sixth helper, read only after the rules widened from
  the eighth set were committed: their test set.
* ``paraphrase10``: a tenth (28 prompts), written blind by a seventh helper, read only after the shipped rules
  (two review fixes after the ninth's) were committed: their second test set. From then on a dev set.
* ``paraphrase11``, ``paraphrase12``: 28 prompts each, written blind by two more helpers (the second asked for
  writers unlike the usual ones), read only after the rules widened from the ninth and tenth sets were committed
  (787f0f6): their test sets. From then on dev sets.
* ``paraphrase13``, ``paraphrase14``: 28 prompts each, written blind by two more helpers, read only after the
  rules widened from the eleventh and twelfth sets were committed (2b25fc5): their test sets. From then on dev
  sets.
* ``paraphrase15``, ``paraphrase16``, ``paraphrase17``: 28 prompts each, written blind by three more helpers, read
  only after the shipped rules (c635f69) were committed, which were not changed in between: their test sets (the
  decision rule of docs/demo.md fixed before the last two were written). From then on dev sets.
* ``paraphrase18``, ``paraphrase19``: 28 prompts each, written blind after the rules were widened once more and a
  second decision rule was committed (1b3f9e2), read with those rules unchanged: their test sets.

Each case is a :class:`BenchCase` (prompt, the objects' Attributes, split "seen"/"heldout", set name).
"""
from __future__ import annotations

from typing import NamedTuple

from openwan.demo.world import HELD_OUT, Attributes, prompt_for

PARAPHRASE_SETS = ("paraphrase",) + tuple(f"paraphrase{k}" for k in range(2, 20))
SETS = ("single", "two_objects") + PARAPHRASE_SETS


class BenchCase(NamedTuple):
    prompt: str
    objects: tuple          # Attributes of each object, in the prompt's order
    split: str              # "seen" or "heldout"
    set: str                # one of SETS


def _split(objects) -> str:
    return "heldout" if any(Attributes(*a) in HELD_OUT for a in objects) else "seen"


_TWO_OBJECTS = (
    (("red", "circle", "left"), ("blue", "square", "right")),
    (("green", "square", "up"), ("yellow", "triangle", "still")),
    (("white", "circle", "growing"), ("purple", "square", "down")),
    (("cyan", "triangle", "down"), ("red", "square", "left")),
    (("yellow", "circle", "growing"), ("blue", "triangle", "left")),
    (("purple", "circle", "up"), ("green", "triangle", "right")),
    (("red", "triangle", "still"), ("cyan", "circle", "shrinking")),
    (("blue", "circle", "down"), ("white", "triangle", "up")),
    (("green", "circle", "right"), ("red", "square", "shrinking")),
    (("white", "square", "left"), ("yellow", "circle", "down")),
    (("cyan", "square", "still"), ("purple", "triangle", "growing")),
    (("yellow", "square", "right"), ("green", "triangle", "left")),
)

# (color, shape, motion) and a wording the world's captions never use
_PARAPHRASES = (
    (("red", "square", "left"), "a square, red in colour, heading off toward the left edge"),
    (("green", "circle", "left"), "watch the green ball travel leftwards across the frame"),
    (("purple", "triangle", "right"), "one purple triangle that keeps heading right"),
    (("cyan", "circle", "up"), "a cyan dot climbing toward the top"),
    (("yellow", "square", "down"), "a yellow block dropping toward the bottom of the picture"),
    (("white", "circle", "still"), "a white circle that does not move at all"),
    (("blue", "triangle", "growing"), "a blue triangle becoming larger and larger"),
    (("green", "triangle", "shrinking"), "a green triangle slowly turning tiny"),
    (("red", "circle", "left"), "against a dark backdrop, a red circle heads leftward"),
    (("blue", "circle", "right"), "a blue disc drifts off toward the right side"),
    (("white", "square", "up"), "a white box ascending toward the top edge"),
    (("yellow", "square", "shrinking"), "a yellow square that gets smaller and smaller"),
    (("green", "circle", "still"), "a green circle resting motionless in one spot"),
    (("purple", "square", "left"), "a magenta square gliding over to the left"),
)

# the second set (paraphrase2): written before the extension's vocabulary was widened
_PARAPHRASES_2 = (
    (("red", "circle", "up"), "a red ball floats up to the top of the frame"),
    (("blue", "square", "left"), "a blue block slides over toward the left side"),
    (("green", "triangle", "right"), "a green triangle travelling rightward across the frame"),
    (("yellow", "circle", "down"), "a yellow dot plummets toward the bottom"),
    (("white", "square", "still"), "a white square that stays put"),
    (("cyan", "circle", "growing"), "a cyan circle swelling up in size"),
    (("purple", "triangle", "shrinking"), "a violet triangle dwindling away"),
    (("red", "square", "bounce_lr"), "a red square ricocheting between the two side walls"),
    (("blue", "circle", "bounce_ud"), "a blue ball bouncing off the floor and the ceiling"),
    (("green", "square", "circling"), "a green box travelling round a circular path"),
    (("yellow", "triangle", "up"), "a yellow triangle ascending to the top"),
    (("white", "circle", "left"), "a white circle heading west"),
    (("cyan", "square", "down"), "a turquoise square descending to the bottom"),
    (("purple", "circle", "still"), "a purple circle frozen in the middle of the frame"),
    (("red", "triangle", "growing"), "a red triangle ballooning to a huge size"),
    (("blue", "triangle", "shrinking"), "a blue triangle becoming tinier and tinier"),
    (("green", "circle", "bounce_lr"), "a green circle bouncing to and fro horizontally"),
    (("white", "triangle", "circling"), "a white triangle orbiting around the centre"),
    (("yellow", "square", "right"), "a yellow square moves toward the right edge"),
    (("cyan", "triangle", "bounce_ud"), "a cyan triangle hopping up and down"),
)

# the third set (paraphrase3): the test set of the widened vocabulary
_PARAPHRASES_3 = (
    (("green", "circle", "up"), "a green circle lifting off toward the sky"),
    (("red", "square", "down"), "a red square gently dropping to the ground"),
    (("blue", "triangle", "left"), "a blue triangle that travels from right to left"),
    (("yellow", "circle", "right"), "a yellow circle cruising over to the right-hand side"),
    (("white", "triangle", "still"), "a white triangle sitting perfectly still"),
    (("purple", "square", "growing"), "a purple square increasing in size"),
    (("cyan", "circle", "shrinking"), "a cyan circle diminishing in size"),
    (("red", "circle", "bounce_ud"), "a red ball springing up and down like a yo-yo"),
    (("blue", "square", "bounce_lr"), "a blue square bouncing from wall to wall"),
    (("green", "triangle", "circling"), "a green triangle going around in a loop"),
    (("yellow", "square", "up"), "a yellow square heading upward"),
    (("white", "circle", "down"), "a white circle descending toward the ground"),
    (("purple", "triangle", "left"), "a purple triangle moving toward the left-hand edge"),
    (("cyan", "square", "right"), "a cyan square gliding eastward"),
    (("red", "triangle", "still"), "a red triangle that remains stationary"),
    (("blue", "circle", "growing"), "a blue circle blowing up like a balloon"),
    (("green", "square", "shrinking"), "a green square shrivelling to almost nothing"),
    (("white", "square", "circling"), "a white square moving round in a big loop"),
    (("yellow", "triangle", "bounce_lr"), "a yellow triangle swinging from side to side"),
    (("purple", "circle", "bounce_ud"), "a purple ball bobbing vertically"),
)

# the fourth set (paraphrase4): 28 prompts written on 2026-12-05 by a helper that saw only the world's names and
# the template phrases to avoid, never the parser; committed after the vocabulary's second widening (339f26d),
# untouched since
_PARAPHRASES_4 = (
    (("red", "circle", "left"), "A crimson ball rolls toward the left edge of the screen."),
    (("cyan", "square", "left"), "teal box heading west"),
    (("purple", "triangle", "left"), "Video of a violet triangle that glides from the right side of the frame over "
                                     "to the left."),
    (("yellow", "triangle", "right"), "The yellow triangle drifts eastward across the dark background."),
    (("white", "circle", "right"), "a small white dot scooting off toward the right-hand side"),
    (("green", "square", "right"), "Watch as a green tile makes its way from left to right."),
    (("blue", "square", "up"), "A blue block floats up toward the top of the frame."),
    (("red", "triangle", "up"), "red triangle climbing skyward"),
    (("green", "circle", "up"), "Clip: a green disc lifts off and heads north until it leaves the top edge."),
    (("yellow", "circle", "down"), "A yellow ball drops toward the ground."),
    (("purple", "square", "down"), "The purple square slowly travels downward, from the top of the screen to the "
                                   "bottom."),
    (("cyan", "triangle", "down"), "Southbound cyan triangle, headed for the bottom edge."),
    (("white", "square", "still"), "A white square sits motionless in the middle of the frame."),
    (("blue", "triangle", "still"), "Just a blue triangle, perfectly stationary, nothing happening."),
    (("red", "square", "still"), "a static shot of a scarlet block that never budges"),
    (("green", "triangle", "growing"), "A green triangle swells until it fills much of the screen."),
    (("purple", "circle", "growing"), "violet circle increasing in size"),
    (("cyan", "square", "growing"), "The teal square gets larger and larger without changing position."),
    (("yellow", "square", "shrinking"), "A yellow box dwindles to a tiny speck right where it stands."),
    (("white", "triangle", "shrinking"), "Video of a white triangle that gradually gets tinier."),
    (("blue", "circle", "shrinking"), "blue dot reducing in size while staying centered"),
    (("red", "circle", "bounce_lr"), "A red ball ricochets between the left and right walls."),
    (("purple", "triangle", "bounce_lr"), "violet triangle ping-ponging side to side"),
    (("white", "square", "bounce_lr"), "The white tile keeps bouncing off the left edge and then the right edge, "
                                       "over and over."),
    (("cyan", "circle", "bounce_ud"), "A cyan ball bounces off the floor and the ceiling repeatedly."),
    (("yellow", "triangle", "bounce_ud"), "Here's a yellow triangle rebounding from the top edge to the bottom edge "
                                          "and back again."),
    (("green", "square", "circling"), "A green square traces a circular orbit around the center of the screen."),
    (("blue", "triangle", "circling"), "In this clip, a blue triangle revolves around the middle of the frame along "
                                       "a round path."),
)

# the fifth set (paraphrase5): 28 prompts written on 2026-12-05 by a second helper, blind the same way (no example
# synonyms given); committed after the rules widened from the fourth set's misses (715ff17) were frozen: their test
# set
_PARAPHRASES_5 = (
    (("red", "triangle", "left"), "Scarlet triangle drifts leftward across an empty black backdrop."),
    (("cyan", "square", "left"), "cyan square heading west"),
    (("white", "circle", "left"), "Can you make a white ball roll off toward the left edge of the frame?"),
    (("purple", "circle", "right"), "a violet dot travels from the left side all the way over to the right"),
    (("yellow", "triangle", "right"), "Yellow triangle, eastbound."),
    (("green", "square", "right"), "I'd like a green square gliding over to the right-hand side of the screen."),
    (("blue", "circle", "up"), "A blue circle drifts skyward like a released balloon."),
    (("red", "square", "up"), "red square climbing toward the top of the screen"),
    (("white", "triangle", "up"), "Animate a white triangle that lifts off from the bottom and heads for the ceiling."),
    (("yellow", "circle", "down"), "yellow disc dropping toward the bottom edge like a stone"),
    (("purple", "square", "down"), "Purple square travelling south."),
    (("cyan", "triangle", "down"), "Show an aqua triangle gradually coming down from the top of the frame to the "
                                   "bottom."),
    (("green", "triangle", "still"), "green triangle, totally motionless, dead center"),
    (("blue", "square", "still"), "A blue square just sits there in the middle, perfectly stationary."),
    (("red", "circle", "still"), "static shot of a red dot that never moves"),
    (("white", "square", "growing"), "a white square that swells until it fills much of the frame"),
    (("purple", "triangle", "growing"), "Purple triangle gets larger and larger in the middle of the screen."),
    (("cyan", "circle", "growing"), "cyan circle starts tiny and ends up huge"),
    (("green", "circle", "shrinking"), "emerald circle dwindling to a tiny speck"),
    (("yellow", "square", "shrinking"), "Make the yellow square get tinier and tinier until it almost vanishes."),
    (("blue", "triangle", "shrinking"), "Start with a big blue triangle and have it diminish in place."),
    (("yellow", "circle", "bounce_lr"), "a golden ball ping-ponging between the left and right walls"),
    (("white", "square", "bounce_lr"), "White box ricochets side to side across the frame."),
    (("red", "triangle", "bounce_lr"), "red triangle oscillating horizontally, rebounding whenever it hits a side "
                                       "edge"),
    (("cyan", "circle", "bounce_ud"), "A cyan orb that keeps bouncing off the floor and the ceiling of the frame."),
    (("blue", "triangle", "bounce_ud"), "blue triangle yo-yoing vertically between the top and bottom edges"),
    (("purple", "square", "circling"), "purple square orbiting around the center of the frame"),
    (("green", "circle", "circling"), "A green circle travels in a big loop around the screen, like a moon around a "
                                      "planet."),
)

# the sixth set (paraphrase6): 28 prompts written on 2026-12-05 by a third helper, blind the same way (seven
# imagined writers, four prompts each); committed after the rules widened from the fifth set's misses (866e804)
# were frozen: their test set
_PARAPHRASES_6 = (
    (("red", "circle", "left"), "a red ball rolls all the way over to the left side pleeease"),
    (("yellow", "triangle", "up"), "make the yellow triangle fly up up up to the sky!!"),
    (("green", "square", "bounce_lr"), "green box boings from the left wall to the right wall and back again lots "
                                       "and lots of times"),
    (("purple", "circle", "growing"), "i want a purple ball that gets big big BIGGER"),
    (("blue", "square", "right"), "Wide static shot: a blue square enters frame left and tracks steadily across to "
                                  "exit frame right. Black backdrop."),
    (("white", "triangle", "still"), "Locked-off shot, white triangle centered on black, held motionless for the "
                                     "entire take. No camera move, no subject move."),
    (("cyan", "circle", "shrinking"), "Camera locked. A cyan disc dwindles where it sits, down to a pinpoint over "
                                      "the course of the shot."),
    (("red", "triangle", "bounce_ud"), "Close on a red triangle against darkness; it ricochets off the top of frame, "
                                       "then the bottom, repeating, vertical axis only."),
    (("green", "circle", "down"), "please make video where green circle go to down, from top of screen until bottom"),
    (("purple", "square", "left"), "I want purple square which is go to left direction slowly, background is dark"),
    (("yellow", "circle", "circling"), "yellow circle is travel on a round path around middle of screen, again and "
                                       "again"),
    (("white", "square", "growing"), "white square become more and more big but stay in same place"),
    (("cyan", "triangle", "right"), "obj=triangle, color=cyan, dx>0 (heading toward the right edge), dy=0, bg=black"),
    (("blue", "circle", "still"), "render a blue circle at center, velocity = 0, no animation on position or scale"),
    (("red", "square", "shrinking"), "red square, scale animates from 1.0 to 0.1 over the clip, position fixed"),
    (("purple", "triangle", "bounce_lr"), "purple triangle; x oscillates between xmin and xmax, reflecting at the "
                                          "left/right bounds; y constant"),
    (("white", "circle", "up"), "a white disc climbs through the dark toward the upper edge of the night"),
    (("blue", "triangle", "down"), "a blue triangle descends like a slow tear through the black"),
    (("yellow", "square", "shrinking"), "a yellow square wanes, smaller and smaller where it stands, until only a "
                                        "point of it remains"),
    (("green", "triangle", "circling"), "a green triangle traces a slow loop, orbit after orbit, about the center of "
                                        "the void"),
    (("cyan", "square", "left"), "cyan square to the left edge, quick"),
    (("red", "circle", "right"), "red circle slide to right"),
    (("green", "square", "still"), "green square, no motion"),
    (("blue", "circle", "bounce_lr"), "blue dot ping pong horizontally"),
    (("purple", "circle", "down"), "A purple circle translates vertically downward from the top edge to the bottom "
                                   "edge of the frame at constant speed."),
    (("yellow", "triangle", "growing"), "A yellow triangle remains centered while its size increases uniformly "
                                        "throughout the clip."),
    (("cyan", "triangle", "up"), "A cyan triangle travels vertically from the bottom of the frame to the top, "
                                 "entering low and exiting high."),
    (("white", "square", "bounce_ud"), "Specification: one white square; motion: periodic vertical oscillation, "
                                       "reversing direction upon contact with the upper and lower frame boundaries."),
)

# the seventh set (paraphrase7): 28 prompts written on 2026-12-05 by a fourth helper, blind the same way (seven
# imagined writers, four prompts each); committed after the rules widened from the sixth set's misses (4bbc14f)
# were frozen: their test set
_PARAPHRASES_7 = (
    (("red", "circle", "left"), "yo can u make a red ball zoom off to the left lol"),
    (("cyan", "square", "growing"), "ok so like an aqua square that keeps swelling up more n more?? dark bg pls"),
    (("purple", "triangle", "bounce_lr"), "purple triangle ping-ponging wall to wall, left edge then right edge, "
                                          "forever"),
    (("yellow", "circle", "down"), "need a yellow dot that just drops to the bottom, nothing else"),
    (("blue", "square", "right"), "Static wide shot, pitch-black backdrop: a navy blue square tracks across the "
                                  "frame from left to right at an even pace."),
    (("white", "triangle", "still"), "Locked-off frame, single white triangle dead center, zero movement for the "
                                     "full duration of the shot."),
    (("green", "circle", "circling"), "Overhead angle on a black set: an emerald disc traces a smooth circular orbit "
                                      "around the center of frame."),
    (("red", "triangle", "shrinking"), "Hold the camera static; a crimson triangle scales down in place, dwindling "
                                       "toward a point in the middle of frame."),
    (("green", "triangle", "up"), "Please make green triangle, it go to the top of screen slowly, background is dark."),
    (("yellow", "square", "growing"), "I want yellow square which become more big and more big, stay in same place."),
    (("blue", "circle", "bounce_ud"), "a blue circle jump from floor to ceiling and come back, again and again, on "
                                      "dark background"),
    (("white", "square", "left"), "White square is travel to left side of the screen, please."),
    (("purple", "circle", "down"), "purple circle; linear translation from top edge to bottom edge; constant "
                                   "velocity; bg #000"),
    (("red", "square", "bounce_lr"), "Spec: one red square. x position oscillates between the left and right frame "
                                     "bounds, reflecting off each wall. y fixed."),
    (("cyan", "triangle", "shrinking"), "cyan triangle, scale factor animates 1.0 -> 0.2 over the clip, anchor at "
                                        "center, no translation"),
    (("green", "square", "right"), "green square, translate +x (rightward) at constant speed across the viewport"),
    (("white", "circle", "up"), "A little white circle floats up, up, up into the dark night sky, like a lost "
                                "balloon."),
    (("purple", "square", "still"), "Once upon a time, a small violet square sat very quietly in the dark and did "
                                    "not move one bit."),
    (("blue", "triangle", "circling"), "Round and round the blue triangle goes, tracing a big ring through the "
                                       "darkness, like a merry-go-round."),
    (("red", "circle", "growing"), "The tiny red ball puffed up bigger and bigger, like a balloon filling with air, "
                                   "without ever leaving its spot."),
    (("cyan", "circle", "right"), "cyan circle, heads right, fast"),
    (("white", "triangle", "down"), "white triangle top to bottom. go"),
    (("green", "triangle", "shrinking"), "green triangle, make it smaller & smaller"),
    (("yellow", "square", "bounce_lr"), "yellow box side-to-side bounce, edge to edge, loop"),
    (("red", "square", "up"), "Demonstrate uniform vertical motion: a red square travels upward at constant velocity "
                              "from the bottom of the frame to the top."),
    (("blue", "circle", "still"), "A blue circle at rest: zero velocity, zero acceleration, its position unchanged "
                                  "throughout the clip."),
    (("cyan", "square", "bounce_ud"), "Model repeated elastic collisions: a cyan square rebounds off the floor, hits "
                                      "the ceiling, and returns, oscillating vertically."),
    (("purple", "triangle", "left"), "Show a purple triangle undergoing constant-velocity displacement in the "
                                     "negative x direction, toward the left edge."),
)

# the eighth set (paraphrase8): 28 prompts written on 2026-12-05 by a fifth helper, blind the same way (seven
# writers of its own choosing); committed after the rules widened from the seventh set's misses (d4b7e40) were
# frozen: their test set
_PARAPHRASES_8 = (
    (("red", "circle", "left"), "red ball zooming off to the left side of the screen pls"),
    (("yellow", "square", "right"), "Could you please make a short clip of a yellow square that travels from the "
                                    "left side of the picture over to the right side? Thank you."),
    (("green", "triangle", "up"), "green triangle, translate vertically toward top edge, constant velocity"),
    (("cyan", "circle", "down"), "A cyan circle which goes from above to below in the picture."),
    (("blue", "square", "still"), "For my little ones: a big blue square that just sits there quietly, no moving at "
                                  "all"),
    (("purple", "triangle", "growing"), "Violet triangle, locked position, scale-up animation from tiny to filling "
                                        "most of the frame"),
    (("white", "circle", "shrinking"), "White disc, centered, scales down to a single point, no translation"),
    (("red", "square", "bounce_lr"), "red square ricocheting off the left and right sides of the screen nonstop"),
    (("yellow", "triangle", "bounce_ud"), "yellow triangle pinging off the ceiling and the floor of the frame over "
                                          "and over"),
    (("green", "circle", "circling"), "object: green circle; motion: circular orbit around frame center, loop"),
    (("cyan", "square", "left"), "Please a cyan square, it should wander to the left side, starting at the right "
                                 "edge."),
    (("blue", "triangle", "right"), "Can I get a blue triangle taking a little walk across to the right for story "
                                    "time?"),
    (("purple", "circle", "up"), "I would like to see a purple circle slowly making its way from the bottom of the "
                                 "picture to the top."),
    (("white", "square", "down"), "White square, linear downward move, enters frame top and exits bottom, dark bg"),
    (("red", "circle", "still"), "A red circle, kindly, that stays exactly where it is for the whole clip, with no "
                                 "movement whatsoever."),
    (("yellow", "circle", "growing"), "yellow dot that swells up bigger n bigger"),
    (("cyan", "triangle", "bounce_lr"), "Cyan triangle what springs from the left wall to the right wall and back "
                                        "again, always repeat."),
    (("green", "square", "shrinking"), "green box gets tinier and tinier till its basically gone"),
    (("blue", "circle", "bounce_ud"), "blue circle, vertical oscillation, reflects off top and bottom boundaries"),
    (("purple", "square", "circling"), "Please show a violet square that keeps travelling along a circular track, "
                                       "lap after lap."),
    (("white", "triangle", "left"), "a snow-white triangle that tiptoes over to the left, nice and gentle"),
    (("red", "triangle", "right"), "crimson triangle, horizontal track left-to-right, ease-in-out, black backdrop"),
    (("yellow", "square", "up"), "yellow square block floating up to the top"),
    (("green", "triangle", "down"), "Green triangle. It comes down from top until the bottom, like a stone in water."),
    (("cyan", "circle", "still"), "cyan circle frozen in the middle, doesnt move at all"),
    (("blue", "square", "growing"), "blue square that just keeps getting huger lol"),
    (("purple", "triangle", "shrinking"), "purple triangle, fixed position, scale decreasing from 100% to about 20%"),
    (("white", "circle", "bounce_lr"), "a white ball that bonks off the left wall, then the right wall, again and "
                                       "again like ping-pong"),
)

# the ninth set (paraphrase9): 28 prompts written on 2026-12-05 by a sixth helper, blind the same way; committed
# after the rules widened from the eighth set's misses (0f06e0f) were frozen: their test set
_PARAPHRASES_9 = (
    (("red", "circle", "left"), "Good afternoon. Could you please make a short clip of a red ball that travels "
                                "slowly from the right-hand side of the screen over to the left-hand side? A plain "
                                "dark background would be lovely. Thank you kindly."),
    (("yellow", "square", "left"), "yellow square go to left side, slowly please"),
    (("cyan", "triangle", "left"), "cyan triangle, linear tween along X from right edge to left edge, dark bg, 2s "
                                   "loop"),
    (("green", "triangle", "right"), "green triangle speeding over to the right side lol"),
    (("blue", "circle", "right"), "Concept: blue circle enters frame left, exits frame right. Clean dark background, "
                                  "single object, smooth horizontal travel."),
    (("purple", "square", "right"), "A violet square shall translate horizontally from the left border to the right "
                                    "border at constant speed. Background: dark, uniform."),
    (("white", "circle", "up"), "white circle floating up to the top thats it"),
    (("red", "triangle", "up"), "for my little girl: a red triangle that climbs up to the sky of the screen, slow "
                                "please"),
    (("green", "square", "up"), "Green square, vertical displacement upward from bottom edge to top edge, no change "
                                "of size."),
    (("purple", "triangle", "down"), "one purple triangle, it come down from top to bottom of screen"),
    (("white", "square", "down"), "White square on black, animate Y position top to bottom, constant velocity, no "
                                  "rotation."),
    (("cyan", "circle", "down"), "a aqua colored ball that comes down slowly from the top to the bottom, is for my "
                                 "son"),
    (("yellow", "circle", "still"), "I would like to see a single yellow disc sitting perfectly motionless in the "
                                    "middle of a dark screen for the whole video, please. No movement at all, if you "
                                    "would be so kind."),
    (("blue", "square", "still"), "Need a static hero shot: one blue square, centered, completely stationary, dark "
                                  "backdrop, no animation on the object."),
    (("white", "triangle", "still"), "White triangle, position fixed, size fixed, zero velocity during entire "
                                     "sequence."),
    (("green", "circle", "growing"), "green circle become big and big, stay in center"),
    (("red", "square", "growing"), "Red square centered, keyframe scale from 20% to 100%, ease-in-out, no "
                                   "translation. Dark backdrop."),
    (("cyan", "square", "growing"), "cyan square that start small and then get big big big, for kids video"),
    (("blue", "triangle", "shrinking"), "blue triangle going from big to super tiny ngl"),
    (("yellow", "triangle", "shrinking"), "Yellow triangle scaling down over the duration of the clip, ending small. "
                                          "Minimal dark background."),
    (("purple", "circle", "shrinking"), "Please show me one purple circle, rather large at first, which gradually "
                                        "becomes tinier and tinier until it is just a little dot. Dark background, "
                                        "nothing else in the picture. Many thanks."),
    (("green", "square", "bounce_lr"), "Green square oscillates horizontally, reflecting at the left and right frame "
                                       "boundaries. Periodic motion."),
    (("white", "triangle", "bounce_lr"), "white triangle that hit the left wall and the right wall and come back "
                                         "every time, like ping pong"),
    (("red", "circle", "bounce_lr"), "red circle ping-ponging horizontally between the left and right frame edges, "
                                     "looping, flat dark bg"),
    (("yellow", "square", "bounce_ud"), "yellow square boinging off the top n bottom over and over"),
    (("blue", "circle", "bounce_ud"), "Could you animate a blue ball bouncing between the ceiling and the floor of "
                                      "the frame, over and over, like a child's rubber ball? Just the one ball on a "
                                      "dark background, please."),
    (("purple", "square", "circling"), "purple square make round orbit path, like planet around sun"),
    (("cyan", "triangle", "circling"), "Cyan triangle tracing a loop around the centre of the frame, continuous "
                                       "circular motion, dark bg."),
)

# the tenth set (paraphrase10): 28 prompts written on 2026-12-05 by a seventh helper, blind the same way; committed
# after the shipped rules (1640717) were frozen: their second test set
_PARAPHRASES_10 = (
    (("red", "circle", "left"), "red ball zooms off to the left"),
    (("cyan", "triangle", "growing"), "cyan triangle swells up bigger n bigger, stays in the middle"),
    (("yellow", "square", "bounce_ud"), "yellow box bouncin off the top and bottom over n over"),
    (("purple", "circle", "still"), "purple dot just chillin, no movement"),
    (("green", "square", "up"), "Could you please make a short clip of a green square that travels slowly from the "
                                "bottom of the screen to the top? Thank you."),
    (("white", "triangle", "shrinking"), "I would like to see a white triangle in the centre that gradually becomes "
                                         "tinier until it is quite small."),
    (("blue", "circle", "bounce_lr"), "Please show a blue circle that bounces off the left wall, then the right "
                                      "wall, again and again."),
    (("red", "triangle", "down"), "A red triangle, if you please, descending gently from the top of the picture to "
                                  "the bottom."),
    (("yellow", "triangle", "right"), "a yellow triangle what is traveling to right side of the screen"),
    (("cyan", "circle", "shrinking"), "I want the circle in cyan colour become more and more small, it stay in the "
                                      "middle"),
    (("purple", "square", "circling"), "violet square follow a round path around the center of the image"),
    (("green", "triangle", "still"), "green triangle, no motion please, only stay on same place whole video"),
    (("white", "square", "left"), "white square, linear translate on X axis from right edge to left edge, 3s, dark "
                                  "bg"),
    (("red", "circle", "growing"), "red circle, centered, scale keyframed 20% -> 100%, no position change"),
    (("blue", "triangle", "up"), "blue triangle, tween position Y from bottom of frame to top, ease in-out"),
    (("yellow", "circle", "bounce_lr"), "yellow circle ping-pong on the horizontal axis, rebounding off both side "
                                        "edges, loopable"),
    (("green", "circle", "right"), "can the green ball roll over to the right side pls"),
    (("purple", "triangle", "down"), "a purple triangle fell from the sky! it goes all the way to the bottom"),
    (("red", "square", "shrinking"), "make the red square get teeny tiny, smaller and smaller till its almost gone"),
    (("cyan", "triangle", "bounce_ud"), "an aqua triangle that bounces from the floor to the ceiling and back again, "
                                        "over and over"),
    (("blue", "square", "still"), "obj=blue square; motion: none; position fixed for full duration"),
    (("white", "circle", "up"), "white circle. direction: upward. start bottom, end top."),
    (("yellow", "triangle", "growing"), "Yellow triangle scaling up in place, no translation."),
    (("green", "square", "bounce_lr"), "green square oscillating horizontally between the left and right borders"),
    (("cyan", "square", "down"), "a lone cyan square descends through the darkness, top to bottom"),
    (("blue", "circle", "circling"), "a blue orb tracing a wide circular orbit in the darkness"),
    (("white", "triangle", "left"), "a pale white triangle glides across the dark, from the right margin toward the "
                                    "left"),
    (("purple", "square", "right"), "a plum-coloured square wandering slowly across to the right, like a thought "
                                    "passing"),
)

# the eleventh set (paraphrase11): 28 prompts written on 2026-12-05 by helper 8 of its kind, blind the same
# way; committed after the shipped rules (787f0f6) were frozen: their test set
_PARAPHRASES_11 = (
    (("red", "triangle", "left"), "red triangle speeding off toward the left pls"),
    (("cyan", "circle", "growing"), "cyan circle that slowly gets huge lol"),
    (("green", "square", "bounce_ud"), "green box bouncin off the top n bottom of the screen nonstop"),
    (("white", "circle", "still"), "white circle just chillin in the middle, no movement"),
    (("blue", "square", "up"), "Could you please make a short video of a blue square that travels slowly from the "
                               "bottom of the screen to the top? Thank you."),
    (("yellow", "triangle", "shrinking"), "I would like to see a yellow triangle which gradually becomes tinier and "
                                          "tinier until it is almost gone."),
    (("purple", "circle", "circling"), "Please show a purple circle travelling along a circular route, the way a "
                                       "planet goes round the sun."),
    (("red", "square", "right"), "A red square, please, that makes its way across the picture from the left-hand "
                                 "side to the right-hand side."),
    (("cyan", "triangle", "down"), "cyan triangle, linear Y translate top edge -> bottom edge, flat dark bg, no "
                                   "scale or rotation"),
    (("white", "square", "bounce_lr"), "white square ping-ponging horizontally between frame edges, ease in/out on "
                                       "each hit"),
    (("green", "circle", "growing"), "green circle, scale keyframes 20% to 100%, anchored center, no position change"),
    (("purple", "triangle", "still"), "static shot: purple triangle, locked off, zero animation, hold for the full "
                                      "duration"),
    (("yellow", "circle", "left"), "A yellow circle which goes from right side to the left side of the picture."),
    (("blue", "triangle", "bounce_ud"), "Blue triangle is jumping up and jumping down between upper and lower "
                                        "border, again and again."),
    (("red", "circle", "shrinking"), "Please make red circle become more small, more small, until it is only little "
                                     "point."),
    (("white", "triangle", "up"), "White triangle, it climbs to the top of the image from under."),
    (("yellow", "square", "down"), "A sunny yellow square that drops from the sky all the way to the ground!"),
    (("purple", "square", "growing"), "Make the violet square puff up like a balloon, bigger every second!"),
    (("green", "triangle", "bounce_lr"), "A little green triangle that boings off the left wall, then the right "
                                         "wall, then the left wall again!"),
    (("blue", "circle", "still"), "A blue circle sitting quietly in one spot, not going anywhere."),
    (("white", "circle", "right"), "obj=circle color=white motion: translate +x (left to right), constant speed"),
    (("cyan", "square", "shrinking"), "cyan square; scale decreases monotonically from 1.0 to ~0.1; position fixed"),
    (("yellow", "triangle", "circling"), "yellow triangle following a circular trajectory around the frame center, "
                                         "constant angular velocity"),
    (("green", "square", "left"), "green square, x decreasing over time (right->left), y constant"),
    (("purple", "circle", "down"), "a lonely purple disc drifting downward through the darkness to the bottom of the "
                                   "frame"),
    (("blue", "square", "right"), "One blue square crossing the dark from the left edge towards the right, "
                                  "unhurried."),
    (("red", "square", "bounce_lr"), "A crimson square bouncing like a tennis ball from one side wall to the other, "
                                     "without ever stopping"),
    (("cyan", "triangle", "up"), "a cyan triangle, light as a feather, floating from the floor of the frame up to "
                                 "its ceiling"),
)

# the twelfth set (paraphrase12): 28 prompts written on 2026-12-05 by helper 9 of its kind, blind the same
# way; committed after the shipped rules (787f0f6) were frozen: their test set
_PARAPHRASES_12 = (
    (("red", "circle", "left"), "Could you please make a short film of a red ball rolling across from the right-hand "
                                "side of the screen over to the left-hand side. Thank you kindly."),
    (("white", "square", "still"), "I would like a white square on a dark background that just sits there in the "
                                   "middle and does not budge at all, please."),
    (("blue", "triangle", "up"), "A blue triangle that slowly climbs from the bottom of the picture all the way to "
                                 "the top, if you would be so kind."),
    (("purple", "circle", "bounce_ud"), "Please show me a purple ball that keeps hitting the bottom edge, springing "
                                        "off to the top edge and coming back again, over and over."),
    (("green", "square", "right"), "Green square sprite on a dark bg, it travels from the left edge of the screen to "
                                   "the right edge at constant speed."),
    (("cyan", "triangle", "shrinking"), "Power-down effect: a cyan triangle scales down in place until it is tiny. "
                                        "No position change, just the scale tween."),
    (("yellow", "circle", "bounce_lr"), "yellow orb, ping-pong it horizontally between the left wall and the right "
                                        "wall of the frame, loop it"),
    (("red", "triangle", "circling"), "Red triangle on a patrol path: it should loop around a circular orbit in the "
                                      "middle of the screen, repeating."),
    (("yellow", "square", "down"), "Please make video where a yellow square go from the top of screen to the bottom "
                                   "of screen."),
    (("green", "circle", "growing"), "I want a green circle which become more and more big, but it stay in the same "
                                     "place."),
    (("white", "triangle", "left"), "the white triangle is travel to left side of the screen, the background is dark"),
    (("blue", "square", "bounce_lr"), "One blue square, it hit the left wall and then bounce to the right wall, and "
                                      "again, many times."),
    (("purple", "triangle", "right"), "Violet triangle enters frame left and exits frame right, linear timing, plain "
                                      "dark backdrop."),
    (("red", "square", "shrinking"), "Scarlet square on black, scale keyframes from 100% down to about 10%, anchored "
                                     "at center, no translation."),
    (("cyan", "circle", "up"), "Aqua circle, vertical travel from bottom of frame to top of frame, ease in-out, dark "
                               "plate."),
    (("green", "triangle", "still"), "Hold shot: lime-green triangle centered on a dark background, zero motion for "
                                     "the entire duration."),
    (("blue", "circle", "down"), "a blue ball that drops from the sky all the way to the ground!!"),
    (("yellow", "triangle", "growing"), "make the yellow triangle get super duper huge like somebody is pumping it "
                                        "up with air"),
    (("red", "circle", "bounce_ud"), "red bouncy ball going boing boing, hitting the top and then the bottom and "
                                     "then the top again"),
    (("purple", "square", "left"), "a purple box racing over to the left side of the screen really fast"),
    (("white", "square", "growing"), "Clean brand reveal: a crisp white square that scales up smoothly right in the "
                                     "centre of a dark canvas."),
    (("green", "circle", "right"), "Hero shot: an emerald green dot glides across the dark canvas from left to "
                                   "right, sleek and minimal."),
    (("blue", "triangle", "still"), "Minimalist static visual: a bold blue triangle, perfectly stationary, against a "
                                    "deep dark background."),
    (("cyan", "square", "bounce_lr"), "Energetic loop: a cyan square ricocheting off the left and right edges of the "
                                      "frame, nonstop."),
    (("purple", "circle", "shrinking"), "A purple disc of monotonically decreasing radius, centroid fixed, on a dark "
                                        "field."),
    (("yellow", "triangle", "up"), "Yellow triangle subject to upward translation at constant velocity from the "
                                   "lower boundary of the frame to the upper boundary."),
    (("cyan", "triangle", "down"), "Cyan triangle, uniform downward displacement along the vertical axis, dark "
                                   "background."),
    (("white", "square", "circling"), "White square tracing a circular trajectory of fixed radius about the frame "
                                      "centre."),
)

# the thirteenth set (paraphrase13): 28 prompts written on 2026-12-05 by helper 10 of its kind, blind the same
# way; committed after the shipped rules (2b25fc5) were frozen: their test set
_PARAPHRASES_13 = (
    (("red", "circle", "left"), "Could you please make a short video of a red ball that travels slowly from the "
                                "right side of the screen over to the left side? Plain dark background, nothing else "
                                "in the picture."),
    (("yellow", "square", "growing"), "I would like to see a yellow square in the middle of a dark screen that "
                                      "gradually swells until it is much larger than when it started."),
    (("purple", "triangle", "bounce_ud"), "Please show a purple triangle that bounces off the top of the frame, then "
                                          "off the bottom, and keeps doing that over and over again."),
    (("white", "circle", "still"), "A simple white circle sitting quietly in the centre of a black background. It "
                                   "should not go anywhere at all, just stay exactly where it is for the whole clip."),
    (("blue", "square", "up"), "Blue square go to upper side of screen, from bottom to top please."),
    (("green", "triangle", "shrinking"), "Green triangle, size become small little by little. Dark background."),
    (("cyan", "circle", "bounce_lr"), "Please make cyan ball. It hit left wall and right wall, repeat many times."),
    (("red", "triangle", "down"), "red color triangle, it move from top of screen to the bottom"),
    (("cyan", "square", "right"), "obj=square color=cyan motion=translate along +x until it exits the right side "
                                  "bg=dark n_objects=1"),
    (("white", "triangle", "circling"), "white triangle, circular orbit around frame center, constant angular "
                                        "velocity, dark bg"),
    (("purple", "circle", "shrinking"), "purple circle, fixed position, scale 1.0 -> 0.2 over the clip"),
    (("yellow", "triangle", "up"), "yellow triangle; trajectory: bottom edge to top edge, vertical, constant speed; "
                                   "no other objects"),
    (("green", "circle", "right"), "lime green ball just cruising over to the right side lol"),
    (("red", "square", "still"), "red box that just chills there and doesnt move at all"),
    (("blue", "circle", "bounce_ud"), "a blue ball boinging off the floor and the ceiling forever"),
    (("white", "square", "growing"), "white square getting HUGE, bigger and bigger till it fills the screen"),
    (("yellow", "circle", "left"), "Need a yellow dot crossing the screen toward the left edge. Dark bg. Thx"),
    (("cyan", "triangle", "down"), "cyan triangle dropping from top to bottom, dark background, asap"),
    (("purple", "square", "bounce_lr"), "Purple square ping-ponging between the side walls, dark bg pls"),
    (("green", "square", "still"), "green square, totally static, center frame. that's it."),
    (("white", "circle", "up"), "A white disc ascends vertically from the lower edge of the frame to the upper edge, "
                                "linear easing."),
    (("blue", "triangle", "right"), "The blue triangular shape should travel across the frame in the direction of "
                                    "the right edge, constant speed, no rotation."),
    (("red", "circle", "shrinking"), "Scarlet circle in the centre with a scale-down animation, it ends as a tiny "
                                     "point. Position is locked."),
    (("cyan", "square", "bounce_lr"), "Aqua-coloured square, horizontal oscillation with a rebound at the left and "
                                      "right borders of the frame."),
    (("purple", "triangle", "left"), "a violet triangle that go to the left side of the screen slowly"),
    (("yellow", "square", "down"), "Yellow square come down from the top until the bottom"),
    (("green", "circle", "circling"), "a green ball that make a big circle, turning around and around the center"),
    (("blue", "triangle", "growing"), "blue triangle that become more and more big, in the middle"),
)

# the fourteenth set (paraphrase14): 28 prompts written on 2026-12-05 by helper 11 of its kind, blind the same
# way; committed after the shipped rules (2b25fc5) were frozen: their test set
_PARAPHRASES_14 = (
    (("red", "circle", "right"), "And the red disc breaks away, charging all the way across to the right-hand side "
                                 "of the screen!"),
    (("blue", "triangle", "bounce_lr"), "Blue triangle smashes into the left wall, rebounds off the right wall, back "
                                        "and forth like a tennis rally!"),
    (("green", "triangle", "up"), "Green triangle launches off the bottom and climbs straight to the top of the "
                                  "frame, what a lift!"),
    (("purple", "circle", "circling"), "Purple circle doing laps now, tracing a big loop round the middle of the "
                                       "screen, lap after lap!"),
    (("yellow", "square", "still"), "Dear, could you make a little film of a yellow square just sitting there "
                                    "quietly on a dark background, no moving about at all."),
    (("white", "circle", "growing"), "I would like a white circle that slowly swells up bigger and bigger, like a "
                                     "balloon being blown up."),
    (("cyan", "triangle", "down"), "An aqua coloured triangle, the colour of a swimming pool, that slowly drops from "
                                   "the top of the picture to the bottom."),
    (("red", "square", "shrinking"), "Please show a red box that gets littler and littler until it is nearly gone."),
    (("cyan", "circle", "left"), "Cyan circular element, translateX from the right edge to the left edge, dark "
                                 "background, linear easing."),
    (("purple", "triangle", "bounce_ud"), "Micro-animation: violet triangle icon, vertical ping-pong between top and "
                                          "bottom bounds, dark canvas."),
    (("white", "square", "shrinking"), "White square tile on a dark UI, scale transform from 100% to 20%, anchored "
                                       "at center, no translation."),
    (("green", "circle", "still"), "Static state: green circle centered on a dark background, zero motion, hold for "
                                   "the full duration."),
    (("yellow", "triangle", "right"), "I want see a yellow triangle what go from left side to right side of the "
                                      "video please."),
    (("blue", "circle", "growing"), "Blue circle become more big and more big, it stay in same place."),
    (("red", "triangle", "bounce_lr"), "Red triangle hit the left wall and come back to the right wall, hit it, and "
                                       "return, many many times."),
    (("cyan", "square", "up"), "Make video: cyan square go to top from bottom, slowly."),
    (("purple", "square", "down"), "Behold, a purple square that descends from the heavens at the top of the frame "
                                   "to the floor below!"),
    (("white", "triangle", "left"), "Watch closely: the white triangle glides away from the right edge and vanishes "
                                    "off the left side."),
    (("green", "square", "growing"), "Abracadabra! A tiny green square magically balloons to an enormous size right "
                                     "where it stands."),
    (("yellow", "circle", "shrinking"), "Keep your eyes on the yellow coin as it dwindles to nothing before your "
                                        "very eyes."),
    (("blue", "square", "still"), "Blue square, position constant, velocity zero, size constant over the full clip."),
    (("red", "circle", "up"), "Red circle trajectory: starts near the bottom edge, ends near the top edge, straight "
                              "vertical path, constant speed."),
    (("cyan", "triangle", "circling"), "Cyan triangle following a circular trajectory around the frame center, "
                                       "constant radius, several revolutions."),
    (("white", "circle", "bounce_ud"), "White circle oscillating vertically between the top and bottom boundaries, "
                                       "reversing direction at each edge."),
    (("green", "triangle", "right"), "A green triangle wandering east across the darkness, from the left shore to "
                                     "the right."),
    (("yellow", "square", "down"), "A yellow square slips from the ceiling of the night sky to the ground below, "
                                   "slow like a sigh."),
    (("purple", "circle", "left"), "A purple full moon sailing westward, right to left across the dark."),
    (("blue", "square", "bounce_lr"), "A sapphire square, ricochet song: kiss the left wall, kiss the right wall, "
                                      "over and over again."),
)

# the fifteenth set (paraphrase15): 28 prompts written on 2026-12-05 by a twelfth helper, blind the same way;
# committed after the shipped rules (c635f69) were frozen: their test set
_PARAPHRASES_15 = (
    (("red", "circle", "right"), "a red ball that rolls over to the right side"),
    (("yellow", "triangle", "growing"), "yelow triangle get bigger and bigger"),
    (("blue", "square", "bounce_ud"), "blue box jumping up and down like on a trampoline"),
    (("green", "circle", "still"), "green dot that just stays there and doesnt move at all"),
    (("cyan", "triangle", "left"), "Cyan triangle, linear translation from the right edge to the left edge, dark bg, "
                                   "no scaling."),
    (("purple", "square", "shrinking"), "Purple square centered, scale keyframed from 100% to 20%, position locked."),
    (("white", "circle", "circling"), "White circle on black, animate position along a circular motion path, "
                                      "constant speed, seamless loop."),
    (("red", "triangle", "up"), "Red triangle, tween Y position from bottom of frame to top, ease in-out."),
    (("green", "square", "left"), "I want a green square which is travelling to the left side of the screen"),
    (("blue", "triangle", "down"), "please a video of blue triangle who goes from the top until the bottom"),
    (("yellow", "circle", "bounce_lr"), "yellow circle make rebound between the wall of left and the wall of right"),
    (("white", "square", "growing"), "white square, it becomes more big and more big in the center"),
    (("purple", "circle", "up"), "purple circle, drifting upward, quick"),
    (("cyan", "square", "still"), "cyan square. static. no motion."),
    (("red", "square", "shrinking"), "red square scales down to nothing"),
    (("green", "triangle", "bounce_lr"), "green triangle ping-pong left/right"),
    (("blue", "circle", "left"), "Could you please make a short film of a navy blue disc that glides slowly across "
                                 "from the right-hand side over to the left-hand side of the picture? Thank you "
                                 "kindly."),
    (("white", "triangle", "down"), "I would like to see a snow-white triangle descend gently from the top of the "
                                    "frame to the bottom, if that is possible."),
    (("yellow", "square", "circling"), "I'd love a little clip where a yellow square travels round and round a big "
                                       "loop, like a horse on a carousel."),
    (("purple", "triangle", "still"), "A violet triangle resting in the middle of a dark background, remaining "
                                      "perfectly motionless throughout, please."),
    (("cyan", "circle", "down"), "obj=circle color=cyan; anim: translate downward toward bottom edge; bg dark"),
    (("red", "circle", "growing"), "Render: single red circle, radius increases linearly over time, center fixed."),
    (("white", "square", "bounce_lr"), "white square: horizontal oscillation, reflect off left and right bounds"),
    (("green", "square", "up"), "test case: green square, start at bottom, end at top, vertical translation only"),
    (("blue", "triangle", "shrinking"), "a sapphire triangle dwindling in the darkness until it is barely a speck"),
    (("cyan", "triangle", "right"), "an aqua triangle drifting toward the right edge, slow as breath"),
    (("purple", "square", "bounce_ud"), "a purple block leaping from floor to ceiling and back, over and over"),
    (("yellow", "circle", "right"), "a lemon-yellow orb sailing from left to right through the dark"),
)

# the sixteenth set (paraphrase16): 28 prompts written on 2026-12-05 by one more helper, blind the same way;
# committed with the shipped rules (c635f69) unchanged: their second and third test sets with paraphrase15
_PARAPHRASES_16 = (
    (("blue", "square", "left"), "blue square zooms off toward the left edge pls"),
    (("red", "circle", "bounce_lr"), "red dot ping-ponging between the left wall and the right wall lol"),
    (("yellow", "triangle", "growing"), "yellow triangle starts tiny and just keeps getting huger"),
    (("cyan", "square", "still"), "cyan square just sitting there doing nothing"),
    (("green", "circle", "up"), "Could you please make a short clip of a green circle that slowly travels from the "
                                "bottom of the screen toward the top? Thank you kindly."),
    (("purple", "triangle", "shrinking"), "I would like to see a purple triangle that gradually dwindles in size "
                                          "until it is quite tiny, if that is possible."),
    (("white", "square", "bounce_ud"), "A white square, please, that keeps bouncing off the ceiling and the floor of "
                                       "the picture, over and over."),
    (("red", "triangle", "circling"), "Please show a red triangle travelling round a circular path, as a planet "
                                      "might go round the sun."),
    (("yellow", "circle", "right"), "A yellow circle which is wandering from left side to right side of the picture."),
    (("blue", "triangle", "down"), "Blue triangle, it comes from above and goes to the bottom of image."),
    (("green", "square", "growing"), "Please a green square which becomes bigger and bigger in the middle, same "
                                     "place."),
    (("cyan", "circle", "bounce_lr"), "Cyan circle jumps from the one side to the other side and back, always "
                                      "horizontal, like ping pong."),
    (("purple", "square", "right"), "purple square, linear translate on X, positive direction (screen-left to "
                                    "screen-right), dark bg, 24fps"),
    (("white", "circle", "shrinking"), "white circle, scale keyframed 100% to 10%, anchored center, no position "
                                       "change"),
    (("red", "square", "up"), "red square, Y translation upward across full frame height, constant velocity"),
    (("green", "triangle", "still"), "green triangle, static hold, zero motion, locked position for whole duration"),
    (("yellow", "square", "down"), "for my little one: a sunny yellow square that slowly drops from the top to the "
                                   "bottom"),
    (("blue", "circle", "growing"), "make a blue ball that puffs up bigger and bigger like a balloon being blown up"),
    (("purple", "circle", "bounce_ud"), "purple ball going boing boing, hopping to the top and back to the bottom "
                                        "again and again"),
    (("white", "triangle", "left"), "a white triangle that scoots over to the left, nice and slow please"),
    (("cyan", "triangle", "up"), "I want a triangle color cyan that climbs to the top of the screen"),
    (("red", "circle", "still"), "one red circle without movement, quiet in the center all the video"),
    (("green", "triangle", "left"), "green triangle that go to the left side all the time"),
    (("white", "square", "shrinking"), "white square that is reducing little by little until almost disappear"),
    (("blue", "square", "bounce_lr"), "blue square; horizontal oscillation, rebounds off left and right bounds"),
    (("cyan", "square", "circling"), "cyan square; path: circle around frame center, constant angular speed, loop"),
    (("purple", "triangle", "down"), "purple triangle; motion=downward, start at top edge, end at bottom edge"),
    (("yellow", "triangle", "right"), "yellow triangle, translate x: 0 -> frame width (heads right), y fixed"),
)

# the seventeenth set (paraphrase17): 28 prompts written on 2026-12-05 by one more helper, blind the same way;
# committed with the shipped rules (c635f69) unchanged: their second and third test sets with paraphrase15
_PARAPHRASES_17 = (
    (("red", "circle", "left"), "Could you please make a short clip of a red ball travelling slowly from the "
                                "right-hand side of the screen over to the left-hand side, against a dark "
                                "background?"),
    (("blue", "triangle", "still"), "I should like to see a blue triangle that simply stays put in the middle of the "
                                    "picture the whole time, please."),
    (("green", "square", "growing"), "A green square, small at first, which gradually swells until it takes up much "
                                     "more of the frame. Thank you kindly."),
    (("purple", "circle", "bounce_ud"), "Please show a purple disc bouncing off the floor and the ceiling of the "
                                        "frame, over and over."),
    (("yellow", "triangle", "right"), "yelow triangle speeding across to the right side lol"),
    (("cyan", "circle", "shrinking"), "cyan bubble that gets tinier and tinier till its almost gone"),
    (("red", "square", "bounce_lr"), "red sqaure ping ponging wall to wall left right left right nonstop"),
    (("white", "circle", "up"), "white dot floating up to the top of the screen pls"),
    (("blue", "square", "down"), "Blue square. Motion: top to bottom, linear, constant speed. BG dark."),
    (("white", "triangle", "growing"), "White triangle, scale 20% -> 100%, anchored center, no translation."),
    (("green", "circle", "circling"), "Green circle. Path: circular orbit around frame center, 1 loop, seamless."),
    (("purple", "triangle", "left"), "Purple triangle / translate X negative (right edge to left edge) / ease in-out"),
    (("cyan", "square", "right"), "Kindly generate video: cyan colour square should travel from left edge to right "
                                  "edge of frame."),
    (("red", "triangle", "shrinking"), "Need one red triangle which reduces in size gradually, position fixed only."),
    (("yellow", "circle", "still"), "Please create yellow circle, completely stationary, no animation of position or "
                                    "size."),
    (("blue", "circle", "bounce_lr"), "Requirement: blue circle to bounce horizontally between left wall and right "
                                      "wall continuously."),
    (("green", "triangle", "up"), "For my kids: a green triangle which climbs from the bottom to the top of the "
                                  "picture."),
    (("white", "square", "shrinking"), "A white square becomes little and littler, it stays on the same place."),
    (("purple", "square", "right"), "Please a violet square that wanders from the left over to the right."),
    (("cyan", "triangle", "bounce_ud"), "An aqua triangle hops between the top and the bottom edge of the picture "
                                        "again and again."),
    (("yellow", "square", "down"), "yellow square dropping from top of screen to bottom"),
    (("red", "circle", "growing"), "red circle that starts tiny and gets huge"),
    (("blue", "triangle", "up"), "blue triangle that goes from the bottom of the screen to the top thats it"),
    (("green", "square", "still"), "just a green square sitting there dont move it at all"),
    (("white", "circle", "left"), "Render a white circular body undergoing uniform translation toward the left "
                                  "boundary of the frame."),
    (("cyan", "circle", "down"), "A cyan disc in free fall from the upper edge to the lower edge of the frame."),
    (("purple", "square", "circling"), "A purple square executing uniform circular motion about the centre of the "
                                       "frame."),
    (("yellow", "triangle", "bounce_lr"), "Yellow triangle oscillating horizontally, reflecting elastically off the "
                                          "left and right edges."),
)

# the eighteenth set (paraphrase18): 28 prompts written on 2026-12-05 by one more helper, blind the same way;
# written after the second decision rule and read with the rules of 1b3f9e2 unchanged: their test set
_PARAPHRASES_18 = (
    (("red", "circle", "up"), "can u make a red ball float up up up to the top like a balloon"),
    (("green", "triangle", "bounce_lr"), "a green triangle that boings off the left wall then the right wall over "
                                         "and over and over"),
    (("purple", "square", "shrinking"), "purple box gets teeny tiny, smaller and smaller til its almost gone"),
    (("yellow", "circle", "still"), "just a yellow dot that sits there and doesnt do anything"),
    (("blue", "square", "right"), "Please generate an animation in which a blue square translates horizontally from "
                                  "the left border to the right border of the frame."),
    (("white", "triangle", "down"), "A white triangle shall descend vertically from the upper edge to the lower edge "
                                    "of the image, with constant velocity."),
    (("cyan", "circle", "growing"), "A cyan disc whose radius increases monotonically over time, while its centre "
                                    "remains fixed."),
    (("red", "square", "bounce_ud"), "Requested: a red square performing a vertical oscillation, reflecting "
                                     "elastically at the top and bottom boundaries of the frame."),
    (("green", "circle", "left"), "green circle, right to left, fast"),
    (("purple", "triangle", "still"), "purple triangle. static. no motion."),
    (("yellow", "square", "growing"), "yellow square scaling up in place, centered"),
    (("blue", "circle", "circling"), "blue circle orbiting around frame center, loop"),
    (("white", "square", "up"), "Please, white square is going to the top of screen slowly."),
    (("cyan", "triangle", "shrinking"), "I want cyan triangle which become more and more small until disappear."),
    (("red", "triangle", "left"), "Red triangle walks to left side from right side, please."),
    (("green", "square", "bounce_ud"), "Green square go to top and come back to bottom repeatedly, like ball jumping "
                                       "on floor."),
    (("yellow", "triangle", "right"), "yellow triangle sprite, tween along +x from left edge -> right edge, linear "
                                      "easing"),
    (("blue", "square", "down"), "blue square sprite, spawn at top, drop to the bottom at constant speed, no gravity "
                                 "accel"),
    (("purple", "circle", "bounce_lr"), "purple circle ping-ponging horizontally between the screen edges, 60fps "
                                        "loop"),
    (("white", "circle", "shrinking"), "white circle, scale tween 1.0 -> 0.1, pivot at center, no translation"),
    (("cyan", "square", "still"), "Hello, I would like a short film of a pretty aqua-coloured square, please, just "
                                  "sitting quietly in the middle of the picture without any movement at all. Thank "
                                  "you kindly."),
    (("red", "circle", "down"), "Could you please show a little red ball gently coming down from the top of the "
                                "screen to the bottom, the way an apple drops from a tree?"),
    (("blue", "triangle", "growing"), "My grandson says this machine makes videos. I would like a navy blue triangle "
                                      "that starts out small and slowly becomes big, staying right where it is."),
    (("green", "triangle", "up"), "I would love to see an emerald green triangle slowly climbing from the bottom of "
                                  "the screen all the way to the top, like a little kite on the breeze. Many thanks, "
                                  "dear."),
    (("white", "triangle", "left"), "white triangle crossing the frame toward the left edge pls"),
    (("cyan", "square", "circling"), "cyan square travelling round a circular track, continuous loop, smooth"),
    (("yellow", "circle", "bounce_lr"), "yellow circle ricocheting off the left & right walls forever"),
    (("purple", "square", "right"), "violet square sliding across from the left side over to the right side, clean "
                                    "minimal bg"),
)

# the nineteenth set (paraphrase19): 28 prompts written on 2026-12-05 by one more helper, blind the same way;
# written after the second decision rule and read with the rules of 1b3f9e2 unchanged: their test set
_PARAPHRASES_19 = (
    (("red", "circle", "left"), "Good day. Kindly generate a short clip of a red circle that travels from the right "
                                "side of the screen across to the left side, on a dark background. Thank you."),
    (("green", "triangle", "still"), "Please produce a video of a green triangle which remains completely motionless "
                                     "at the centre of a black screen for the entire duration."),
    (("blue", "square", "growing"), "I would like a blue square that steadily increases in size where it is placed, "
                                    "without changing its position at all."),
    (("yellow", "circle", "bounce_ud"), "Kindly show a yellow ball that keeps bouncing off the top edge and the "
                                        "bottom edge of the frame, over and over."),
    (("purple", "triangle", "right"), "purpel triangle dashing over to the right side of the screen lol"),
    (("cyan", "square", "shrinking"), "cyan box that gets tinier and tinier til it basically disappears, stays in "
                                      "the same spot tho"),
    (("white", "circle", "circling"), "white ball running laps on a round path around the middle of the screen, "
                                      "nonstop"),
    (("red", "square", "up"), "red block flying straight up to the top kinda slow, black bg"),
    (("yellow", "triangle", "down"), "Yellow triangle. Travels vertically from top of frame to bottom. Constant "
                                     "speed."),
    (("blue", "circle", "bounce_lr"), "Blue disc, oscillating horizontally between the left and right boundaries, "
                                      "rebounding at each edge."),
    (("white", "square", "still"), "White square, fixed position, zero motion. Hold for full clip."),
    (("purple", "circle", "growing"), "Purple circle. Radius increases linearly over time; centre remains fixed."),
    (("green", "circle", "left"), "Please make green round dot, it goes toward the left edge slowly."),
    (("cyan", "triangle", "up"), "cyan color triangle climb to upper side of screen, simple and minimal design"),
    (("red", "triangle", "shrinking"), "red triangle become small little by little, same place, dark background "
                                       "please"),
    (("white", "triangle", "bounce_lr"), "white triangle go to right wall, hit, come back to left wall, repeat many "
                                         "times"),
    (("blue", "triangle", "right"), "Need a 5 sec clip: blue triangle, enters from left, exits on right. Dark bg."),
    (("yellow", "square", "shrinking"), "Requirement - yellow square scaling down to a point, centred, no "
                                        "translation."),
    (("purple", "square", "down"), "Purple square should descend from the top edge towards the bottom edge, smooth "
                                   "easing."),
    (("green", "square", "circling"), "Green square to follow a circular orbit around the frame centre, continuous "
                                      "loop."),
    (("cyan", "circle", "still"), "just a cyan dot sitting there, not going anywhere, my toddler likes that kind of "
                                  "thing"),
    (("white", "circle", "up"), "can u make a plain white circle, like a bubble, float up to the top of the screen? "
                                "nice and slow for bedtime"),
    (("red", "circle", "right"), "a red ball rolling over to the right side, for my kid's learning video"),
    (("green", "triangle", "growing"), "green triangle that swells bigger and bigger but stays put"),
    (("purple", "circle", "bounce_ud"), "Locked-off shot: a violet orb ricochets vertically off the upper and lower "
                                        "frame edges in an endless loop."),
    (("cyan", "square", "left"), "Static camera. An aqua square crosses the frame from right to left, exiting screen "
                                 "left."),
    (("blue", "square", "down"), "No camera movement - a cobalt square drops from the top of frame and leaves "
                                 "through the bottom."),
    (("yellow", "triangle", "bounce_lr"), "Wide shot, dark void: a lemon-yellow triangle ping-pongs horizontally, "
                                          "striking the left and right borders again and again."),
)


def two_object_cases() -> list:
    """The two-object scenes (12): the world's two-object caption with each object's canonical phrase."""
    out = []
    for objs in _TWO_OBJECTS:
        attrs = tuple(Attributes(*a) for a in objs)
        out.append(BenchCase(" and ".join(prompt_for(a) for a in attrs), attrs, _split(attrs), "two_objects"))
    return out


# each paraphrase set's prompts: paraphrase (14 single objects, 8 seen and 6 held-out combinations), paraphrase2
# and paraphrase3 (20 each, every motion; the third the widened vocabulary's test set)
_PARAPHRASE_TABLES = {"paraphrase": _PARAPHRASES, "paraphrase2": _PARAPHRASES_2, "paraphrase3": _PARAPHRASES_3,
                      "paraphrase4": _PARAPHRASES_4, "paraphrase5": _PARAPHRASES_5, "paraphrase6": _PARAPHRASES_6,
                      "paraphrase7": _PARAPHRASES_7, "paraphrase8": _PARAPHRASES_8, "paraphrase9": _PARAPHRASES_9,
                      "paraphrase10": _PARAPHRASES_10, "paraphrase11": _PARAPHRASES_11,
                      "paraphrase12": _PARAPHRASES_12, "paraphrase13": _PARAPHRASES_13,
                      "paraphrase14": _PARAPHRASES_14, "paraphrase15": _PARAPHRASES_15,
                      "paraphrase16": _PARAPHRASES_16, "paraphrase17": _PARAPHRASES_17,
                      "paraphrase18": _PARAPHRASES_18, "paraphrase19": _PARAPHRASES_19}


def paraphrase_cases(name: str = "paraphrase") -> list:
    """The cases of a paraphrase set (one of :data:`PARAPHRASE_SETS`)."""
    return [BenchCase(text, (Attributes(*a),), _split([a]), name) for a, text in _PARAPHRASE_TABLES[name]]


def single_cases() -> list:
    """The fixed benchmark (world.benchmark_prompts) as cases."""
    from openwan.demo.world import benchmark_prompts
    return [BenchCase(bp.prompt, (bp.attributes,), bp.split, "single") for bp in benchmark_prompts()]


def cases(names) -> list:
    """The cases of the named sets, in SETS order."""
    unknown = [n for n in names if n not in SETS]
    if unknown:
        raise ValueError(f"unknown prompt set(s) {unknown}; choose from {list(SETS)}")
    make = {"single": single_cases, "two_objects": two_object_cases,
            **{name: lambda name=name: paraphrase_cases(name) for name in PARAPHRASE_SETS}}
    return [c for n in SETS if n in names for c in make[n]()]
