"""Judging samples: how close generated slices come to real ones, and how varied they are.

    ssim.py       SSIM (Wang et al. 2004), nearest-neighbour and pairwise SSIM, generation_report,
                  print_report (the one line every script prints at the end)
    embedding.py  PCA and t-SNE from scratch, scatter plots of generated against real images
"""
