"""Which classes the fakes fall into, by the domain classifier's predictions."""
import numpy as np

_EPS = 1e-12


def class_histogram(probs):
    """Share of images per predicted class (argmax)."""
    return np.bincount(probs.argmax(1), minlength=probs.shape[1]) / len(probs)


def class_metrics(fake_probs, real_probs, min_share=0.1):
    """A class counts as covered when it holds at least `min_share` of its uniform share (1/K).

    `class_kl` is KL(fake histogram || real histogram), the real one from the same classifier on
    the reference reals, so the classifier's own bias cancels. `classifier_score` is the
    Inception Score computed with the domain classifier: exp E_x KL(p(y|x) || p(y)).
    """
    fake_probs, real_probs = (np.asarray(p, np.float64) for p in (fake_probs, real_probs))
    k = fake_probs.shape[1]
    hist, real_hist = class_histogram(fake_probs), class_histogram(real_probs)
    nz = hist > 0
    kl = float(np.sum(hist[nz] * np.log(hist[nz] / np.maximum(real_hist[nz], _EPS))))
    p = np.clip(fake_probs, _EPS, 1.0)
    p_y = p.mean(0)
    score = float(np.exp(np.mean(np.sum(p * (np.log(p) - np.log(p_y)), axis=1))))
    return {"classes_covered": int(np.sum(hist >= min_share / k)), "class_kl": kl,
            "classifier_score": score, "class_histogram": [float(h) for h in hist]}
