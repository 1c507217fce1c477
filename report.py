"""Last stage: experiments/report/index.html, one static page with every stage's tables and figures (open it in
a browser; no server or network needed). Sections whose stage has not run say which command makes them."""
from stresstest.stages.report import main

if __name__ == "__main__":
    main(__doc__)
