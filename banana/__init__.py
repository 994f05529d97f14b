"""banana: image generators as generalist vision learners, at a scale anyone can run.

The data flow, one module per concept:

``banana.world`` (seeded scenes, exact labels) -> ``banana.codecs`` (task targets <-> RGB)
-> ``datasets`` on disk -> training -> sampling -> ``banana.codecs`` decode
-> ``banana.evaluation`` (metrics, codec ceilings).

Submodules are imported lazily by the user (``from banana.codecs import DepthCodec``) so
that ``import banana`` stays cheap for the command line.
"""

__version__ = "0.1.0"
