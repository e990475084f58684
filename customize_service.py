"""The deployed predictor: ModelArts' TfServingBaseService contract, and a local HTTP server with
the same request (multipart field `images`) and reply.

Not built yet: it comes with the evaluation / export / serving work. Until then this file only
says so, rather than pretending to serve anything.
"""
import sys


def main():
    print("customize_service.py: the predictor is not built yet (export and serving come with "
          "the next issues); there is no model package to serve", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
